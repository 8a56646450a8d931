"""The seam into openai-whisper's decoding loop: `whisper.decoding.Inference` on the MAX decoder.

openai-whisper's `DecodingTask` calls only `logits(tokens, audio_features)`, `rearrange_kv_cache(indices)`
and `cleanup_caching()`. `MaxInference` implements them on a `DecoderState`; `use_max_decoder(model, decoder)`
makes `model.decode` (what `whisper.transcribe()` calls per segment and per fallback temperature) build
tasks with it. Nothing in openai-whisper is patched: the compiled graphs live in `MaxDecoder`, outside
the per-segment tasks, and `transcribe()` runs unchanged (windows, temperature fallback, beam search,
best-of, condition_on_previous_text, no-speech probability, timestamps). Word-level timestamps and language
detection call `model(mel, tokens)` / `model.logits` directly: `use_max_decoder(..., whole_pass=...)` makes
`model.decoder` a `MaxTextDecoder`, a whole-sequence pass on MAX whose cross-attention scores reach
openai-whisper's alignment hooks.

Inside a `MaxDecodingTask`, the prompt prefill computes logits only at the two rows openai-whisper's
loop reads (the start-of-transcript row, for the no-speech probability, and the last); the other rows
are NaN. Every later step returns its one row. Used on its own, without `sot_index`, every row is computed.
"""
from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from dataclasses import replace

import torch
from whisper.decoding import DecodingOptions, DecodingTask, Inference

from maxwhisper.decoder import DecoderState, MaxDecoder
from maxwhisper.errors import MaxWhisperError


# Per decoder and batch: the reusable prompt-logits buffer, how many of its rows are NaN-filled, and the rows
# the last prompt wrote into it.
_PROMPT_LOGITS: "weakref.WeakKeyDictionary[MaxDecoder, dict[int, tuple[torch.Tensor, int, list[int]]]]" = (
    weakref.WeakKeyDictionary())


class MaxInference(Inference):
    """openai-whisper's Inference interface on the MAX decoder's key/value cache."""

    def __init__(self, decoder: MaxDecoder, initial_token_length: int, timer: "DecodeTimer | None" = None,
                 sot_index: int | None = None, capture: bool | None = None):
        self.decoder, self.initial_token_length, self.timer = decoder, initial_token_length, timer
        self.sot_index = sot_index  # given: the prompt's logits are computed only where the loop reads them
        self.capture = capture  # GPU single-token steps replay a captured graph (None: the decoder's default)
        self.state: DecoderState | None = None

    def logits(self, tokens: torch.Tensor, audio_features: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        if self.state is None:
            n_audio = audio_features.shape[0]
            # a fallback temperature decodes the last window again: its cross keys/values are reused
            self.state = self.decoder.new_state(audio_features, tokens.shape[0] // max(n_audio, 1), reuse_cross=True)
            if self.capture is not None:
                self.state.capture = self.capture
        if tokens.shape[-1] > self.initial_token_length:
            tokens = tokens[:, -1:]  # only the newest token after the first call, as PyTorchInference
        new = tokens.shape[-1]
        if self.sot_index is not None and new > 2:
            # openai-whisper's loop reads the prompt's logits at the start-of-transcript row (no-speech
            # probability) and the last row only; the rest are NaN, so any other use shows at once.
            rows = sorted({self.sot_index, new - 1})
            logits = self._nan_logits(tokens.shape[0], new, rows)
            logits[:, rows] = torch.from_numpy(self.state.step(tokens.cpu().numpy(), rows))
        else:
            logits = torch.from_numpy(self.state.step(tokens.cpu().numpy()))
        logits = logits.to(audio_features.device)
        if self.timer:
            self.timer.add(time.perf_counter() - start, tokens.shape[-1])
        return logits

    def _nan_logits(self, batch: int, new: int, rows: list[int]) -> torch.Tensor:
        """A NaN (batch, new, n_vocab) view for the prompt's logits, of one buffer per decoder that later tasks
        reuse. The buffer holds n_text_ctx rows but is NaN-filled only as far as a prompt has reached: pages
        never written are never touched (a fresh NaN tensor per prompt cost ~25 ms of page faults at batch 1
        and ~57 ms at beam 5, measured on the long clip). The rows the last prompt wrote (and openai-whisper's
        filters then edited in place) are set back to NaN first."""
        dims = self.decoder.cfg.dims
        per_batch = _PROMPT_LOGITS.setdefault(self.decoder, {})  # greedy and its best-of fallback alternate
        buffer, filled, written = per_batch.get(batch) or (torch.empty(batch, dims.n_text_ctx, dims.n_vocab), 0, [])
        buffer[:, written] = float("nan")
        if new > filled:
            buffer[:, filled:new] = float("nan")
            filled = new
        per_batch[batch] = (buffer, filled, rows)
        return buffer[:, :new]

    def rearrange_kv_cache(self, source_indices) -> None:
        if self.state is not None:
            self.state.reorder(source_indices)

    def cleanup_caching(self) -> None:
        self.state = None


class DecodeTimer:
    """Seconds spent in the MAX decoder, and the calls and tokens behind them."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.seconds, self.calls, self.tokens = 0.0, 0, 0

    def add(self, seconds: float, tokens: int) -> None:
        self.seconds += seconds
        self.calls += 1
        self.tokens += tokens


class _CrossAttentionScores(torch.nn.Module):
    """A block's `cross_attn` where openai-whisper's word alignment hooks it: called with the block's scores, it
    returns (None, scores) as MultiHeadAttention returns (output, qk), so its forward hooks read qk."""

    def forward(self, qk: torch.Tensor):
        return None, qk


class _Block(torch.nn.Module):
    """A decoder block as openai-whisper's code reaches into it: `attn` is PyTorch's, never run (DecodingTask's
    constructor lists its key and value modules before MaxDecodingTask swaps the inference), `cross_attn` hands
    out MAX's scores."""

    def __init__(self, torch_block: torch.nn.Module):
        super().__init__()
        self.attn, self.cross_attn = torch_block.attn, _CrossAttentionScores()


class MaxTextDecoder(torch.nn.Module):
    """`model.decoder` for the whole-sequence passes openai-whisper makes outside its decoding loop: word
    alignment (`model(mel, tokens)`, which reads each block's cross-attention scores through forward hooks on
    `blocks[i].cross_attn`) and language detection (`model.logits`). One pass from an empty cache through the
    graph-op step compiled with the scores as outputs (`make()`: get_decoder(..., cross_qk=True), which compiles it
    on first use and hands back the same decoder after)."""

    def __init__(self, torch_decoder: torch.nn.Module, make: Callable[[], MaxDecoder]):
        super().__init__()
        self.token_embedding = torch_decoder.token_embedding  # the model keeps a parameter: its `device`
        self.blocks = torch.nn.ModuleList(_Block(block) for block in torch_decoder.blocks)
        self._make = make

    def forward(self, x: torch.Tensor, xa: torch.Tensor, kv_cache: dict | None = None) -> torch.Tensor:
        if kv_cache is not None:
            raise MaxWhisperError("model.decoder is MAX's whole-sequence pass and keeps no PyTorch key/value cache; "
                                  "decode through model.decode (use_max_decoder)")
        state = self._make().new_state(xa.float().cpu().numpy(), x.shape[0] // xa.shape[0], reuse_cross=True)
        state.capture = False  # one pass of many tokens: nothing to replay
        logits = torch.from_numpy(state.step(x.cpu().numpy()))
        for block, qk in zip(self.blocks, state.cross_qk_arrays()):
            block.cross_attn(torch.from_numpy(qk))
        return logits.to(x.device)


class MaxDecodingTask(DecodingTask):
    """openai-whisper's DecodingTask with its inference on the MAX decoder."""

    def __init__(self, model, options: DecodingOptions, decoder: MaxDecoder, timer: DecodeTimer | None = None,
                 capture: bool | None = None):
        super().__init__(model, options)
        self.inference = MaxInference(decoder, len(self.initial_tokens), timer, self.sot_index, capture)
        if hasattr(self.decoder, "inference"):  # beam search reorders the cache through its own reference
            self.decoder.inference = self.inference


def use_max_decoder(model, decoder: MaxDecoder, timer: DecodeTimer | None = None, capture: bool | None = None,
                    whole_pass: Callable[[], MaxDecoder] | None = None):
    """Make `model.decode` (and so `whisper.transcribe(model, ...)`) decode on MAX; returns `model`.
    `capture`: whether GPU single-token steps replay a captured graph (None: MAXWHISPER_CAPTURE's choice).
    `whole_pass`: builds the decoder of `model.decoder`'s passes (MaxTextDecoder); None keeps PyTorch's there."""
    if whole_pass is not None:
        model.decoder = MaxTextDecoder(model.decoder, whole_pass)

    @torch.no_grad()
    def decode(mel: torch.Tensor, options: DecodingOptions = DecodingOptions(), **kwargs):
        # openai-whisper's whisper.decoding.decode, with the task swapped
        single = mel.ndim == 2
        if single:
            mel = mel.unsqueeze(0)
        if kwargs:
            options = replace(options, **kwargs)
        result = MaxDecodingTask(model, options, decoder, timer, capture).run(mel)
        return result[0] if single else result

    model.decode = decode
    return model
