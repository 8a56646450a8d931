"""The PyTorch reference: openai-whisper's AudioEncoder and TextDecoder, run stage by stage, with the same taps
the MAX graphs expose (stages.py)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from whisper.model import AudioEncoder

from maxwhisper.stages import decoder_tap_names, encoder_tap_names


@torch.no_grad()
def torch_taps(encoder: AudioEncoder, mel) -> dict[str, np.ndarray]:
    """openai-whisper's AudioEncoder.forward, step by step; every tap as (batch, time, channels) float32."""
    x = torch.as_tensor(mel, dtype=torch.float32)
    taps = []
    x = F.gelu(encoder.conv1(x))
    taps.append(x.permute(0, 2, 1))
    x = F.gelu(encoder.conv2(x)).permute(0, 2, 1)
    taps.append(x)
    x = (x + encoder.positional_embedding).to(x.dtype)
    taps.append(x)
    for block in encoder.blocks:
        x = block(x)
        taps.append(x)
    taps.append(encoder.ln_post(x))
    names = encoder_tap_names(len(encoder.blocks))
    return {name: t.contiguous().numpy() for name, t in zip(names, taps)}


def torch_encoder(loaded, device: str = "cpu", dtype: torch.dtype = torch.float32) -> AudioEncoder:
    """openai-whisper's AudioEncoder on `device` in `dtype`, LayerNorm parameters kept float32
    (whisper's LayerNorm computes in float32, and CPU layer_norm rejects mixed dtypes)."""
    from whisper.model import LayerNorm
    encoder = loaded.whisper_encoder().to(device, dtype)
    for module in encoder.modules():
        if isinstance(module, LayerNorm):
            module.float()
    return encoder


@torch.no_grad()
def torch_decoder_taps(decoder, tokens, features) -> dict[str, np.ndarray]:
    """openai-whisper's TextDecoder.forward in one pass (no cache), with the MAX step graph's taps:
    embed, each block's output, the final LayerNorm, and the logits; each (batch, tokens, channels)."""
    x_tokens = torch.as_tensor(np.asarray(tokens), dtype=torch.long)
    xa = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    x = decoder.token_embedding(x_tokens) + decoder.positional_embedding[:x_tokens.shape[-1]]
    taps = [x]
    for block in decoder.blocks:
        x = block(x, xa, mask=decoder.mask)
        taps.append(x)
    x = decoder.ln(x)
    taps.append(x)
    out = {name: t.contiguous().numpy() for name, t in zip(decoder_tap_names(len(decoder.blocks)), taps)}
    out["logits"] = (x @ decoder.token_embedding.weight.T).contiguous().numpy()
    return out


def logit_columns(logits: np.ndarray, fixed: np.ndarray, top: int) -> np.ndarray:
    """Per row (tokens, n_vocab): the `fixed` vocabulary columns plus that row's `top` largest logits."""
    best = np.argsort(-logits, axis=-1)[:, :top]
    return np.concatenate([np.broadcast_to(fixed, (len(logits), len(fixed))), best], axis=-1).astype(np.int64)
