"""The decoder at a fixed cache length, for timing one step at a time: openai-whisper's PyTorchInference and the
MAX decoder's state, each primed to `cache` tokens and restored to it before every timed step (the decoder-step
and decoder-paired benchmarks)."""
from __future__ import annotations

import copy

import numpy as np
import torch

from tests.helpers import decoder_named

NEXT_TOKEN = 440  # the token every timed step decodes


def cache_tokens(batch: int, cache: int) -> np.ndarray:
    """The tokens both implementations prime their caches with: the same inputs, so their logits compare."""
    return np.random.default_rng(0).integers(0, 50000, (batch, cache))


class TorchStepper:
    """openai-whisper's PyTorchInference, primed to a cache of `cache` tokens; each call decodes one
    more token from that same cache length."""

    weight_bytes = 4  # openai-whisper keeps float32 weights (on GPU too: each Linear casts its own)

    def __init__(self, model, features, batch: int, cache: int, device: str):
        from whisper.decoding import PyTorchInference
        self.device = device
        self.features = features.to(device)
        self.inference = PyTorchInference(model, cache)
        tokens = torch.from_numpy(cache_tokens(batch, cache)).to(device)
        with torch.no_grad():
            self.inference.logits(tokens, self.features)
        self.saved = dict(self.inference.kv_cache)
        self.next = torch.cat([tokens, torch.full((batch, 1), NEXT_TOKEN, device=device)], 1)

    def restore(self):
        self.inference.kv_cache.clear()
        self.inference.kv_cache.update(self.saved)

    @torch.no_grad()
    def step(self):
        out = self.inference.logits(self.next, self.features)
        if self.device == "cuda":
            torch.cuda.synchronize()
        return out.cpu().numpy()

    def close(self):
        """Remove the cache hooks from the shared model (left installed, they would run, and grow their
        own caches, in every later forward of that model)."""
        self.inference.cleanup_caching()


class MaxStepper:
    """The MAX decoder's state primed to `cache` tokens; each call decodes one more token from there."""

    def __init__(self, decoder, features, batch: int, cache: int, capture: bool = False):
        # as stored: half for the fused kernels where exact, float32 (in parts for exact GPU products) elsewhere
        self.weight_bytes = 2 if decoder.cfg.storage == "float16" else 4 * max(1, decoder.cfg.weight_parts)
        self.state = decoder.new_state(features.numpy(), batch)
        self.state.capture = capture
        self.state.step(cache_tokens(batch, cache))
        self.saved = (self.state.length, self.state.filled)
        self.token = np.full((batch, 1), NEXT_TOKEN, np.int64)

    def restore(self):
        """Back to `cache` tokens (the caches are kept in place: a step writes past the count)."""
        self.state.length, self.state.filled = self.saved

    def step(self):
        return self.state.step(self.token)

    def close(self):
        self.captured, self.capture_error = self.state._captured is not None, self.state.decoder.capture_error
        self.state = None


def make_stepper(impl, device, batch, cache, bundled, torch_model, features):
    if impl.startswith("max"):  # on GPU: -captured replays a captured device graph (CapturedStep); -warps is the
        # step as decoder_warps's kernels (GPU cases only), else graph ops
        decoder = decoder_named(bundled, "gpu-warps" if "-warps" in impl else device)
        return MaxStepper(decoder, features, batch, cache, capture=impl.endswith("-captured"))
    # on GPU, openai-whisper's fp16 path: float32 weights (each Linear casts its own), float16 activations
    model = torch_model if device == "cpu" else copy.deepcopy(torch_model).to("cuda")
    feats = features if device == "cpu" else features.half()
    return TorchStepper(model, feats, batch, cache, "cuda" if device == "gpu" else "cpu")
