"""Python side of the ``decoder_block`` custom Mojo op (maxwhisper/kernels/decoder_block.mojo).

``decoder_block(...)`` runs every Whisper decoder block in turn (self-attention over the cache,
cross-attention, MLP) for the new tokens of every row, then the final LayerNorm and the logits of the rows
asked for, in one kernel, float32 on CPU (the packed weights float32 or float16, widened as loaded), and
returns each block's output, the logits and the LayerNorm; the new tokens' keys and values go into the
cache buffers in place. Caches, cross keys/values and
packed weights are each one tensor, layer after layer. ``pack_block`` lays one block's weights out as the
kernel reads them. ``decoder_warps`` (maxwhisper/kernels/decoder_warps.mojo) is the same op for a GPU: one
warp per output, float32 on CUDA cores, the same inputs and packed weights. A graph that uses either must be
built with ``custom_extensions=[KERNELS_PATH]``.
"""
from __future__ import annotations

import numpy as np

from maxwhisper.gemv import KERNELS_PATH, panels  # noqa: F401  (the same kernel directory)

# The kernel's weight order; matrices are stored (out, in), as PyTorch's Linear keeps them, in panels.
PACKED = ("attn_ln.w", "attn_ln.b", "qkv.w", "qkv.b", "out.w", "out.b", "cross_ln.w", "cross_ln.b",
          "cross_q.w", "cross_q.b", "cross_out.w", "cross_out.b", "mlp_ln.w", "mlp_ln.b",
          "fc1.w", "fc1.b", "fc2.w", "fc2.b")
SCRATCH_WIDTH = 7  # the kernel's working rows per token, in multiples of d


WARPS_CHUNK = 32  # decoder_warps's keys per cross-mix chunk (KC)


def warps_scratch_width(d: int, h: int, n_audio_ctx: int) -> int:
    """decoder_warps's working values per row (its `scratch_width`): q, attention output, MLP hidden (6d),
    then per head and chunk of the audio window the cross mix's partial sums (a max, a sum, two unused values
    and 64 channels), in whole steps of 8."""
    chunks = -(-n_audio_ctx // WARPS_CHUNK)
    return -(-(6 * d + h * chunks * (d // h + 4)) // 8) * 8


def warps_settings() -> tuple[int, int, bool]:
    """decoder_warps's launch settings: threads per thread block of its stages but the logits
    (MAXWHISPER_WARPS_BLOCK, else 64); what the stages prefetch into L2 (MAXWHISPER_WARPS_PREFETCH: 0 nothing;
    1, the default, each block's weights and cross keys and values as its first stage starts, the logits'
    panels as theirs do; 2, the same a block ahead, and the logits' panels from the last block's MLP on; 3, as
    1 with each block's data at evict-last priority in L2, to outlast the logits' panels); and
    whether each stage is a programmatic dependent launch that starts while the stage before it finishes
    (MAXWHISPER_WARPS_PDL, 1 or 0, else 1; Hopper and later, a plain launch elsewhere). The kernel reads them at
    each call of the op; this checks them first, for a one-line error."""
    import os
    from maxwhisper.errors import MaxWhisperError
    block = os.environ.get("MAXWHISPER_WARPS_BLOCK", "") or "64"
    if not block.isdigit() or not (32 <= int(block) <= 1024 and int(block) % 32 == 0):
        raise MaxWhisperError(f"MAXWHISPER_WARPS_BLOCK={block} is not threads per block (a multiple of 32 from 32 "
                              "to 1024); unset it for the default of 64")
    prefetch = os.environ.get("MAXWHISPER_WARPS_PREFETCH", "") or "1"
    if prefetch not in ("0", "1", "2", "3"):
        raise MaxWhisperError(f"MAXWHISPER_WARPS_PREFETCH={prefetch} must be 1 (prefetch each block's data), 2 (a "
                              "block ahead), 3 (kept in L2 at evict-last priority) or 0 (none); unset it for 1")
    pdl = os.environ.get("MAXWHISPER_WARPS_PDL", "") or "1"
    if pdl not in ("0", "1"):
        raise MaxWhisperError(f"MAXWHISPER_WARPS_PDL={pdl} must be 1 (dependent launches) or 0; unset it for 1")
    return int(block), int(prefetch), pdl == "1"


def packed_size(d: int) -> int:
    return 14 * d * d + 17 * d


def pack_block(weights: dict[str, np.ndarray], prefix: str) -> np.ndarray:
    """One block's weights (MAX layout: matrices (in, out)) as the kernel's flat float32 vector, each
    matrix (out, in) in gemv_nt's panels (no padding: every Whisper width is whole panels and steps)."""
    parts = [weights[prefix + name].astype(np.float32) for name in PACKED]
    return np.concatenate([panels(p.T) if p.ndim == 2 else p.ravel() for p in parts])


def decoder_block(x, mask, past, k_cache, v_cache, cross_k, cross_v, packed, rows, ln_w, ln_b, logits_w, n_vocab, batch,
                  warps: bool = False):
    """Every block's output stacked (layers * rows, d), the logits (batch * len(rows), n_vocab) and the final
    LayerNorm (rows, d), for x (rows = batch * new, d) through the blocks in turn, then the LayerNorm, then
    the product of its rows `rows` (of each sequence's new tokens) with logits_w (the embedding in
    `gemv.panels`). Each layer's new keys and values are written into its part of the stacked buffers
    k_cache and v_cache (layers * batch, h, capacity, dh) in place, after the `past[0]` tokens they hold;
    cross_k and cross_v stack each layer's per window, packed each layer's `pack_block` vector; `batch` is the
    graph's batch dimension (x's rows are batch * new). `warps`: the same step as decoder_warps's GPU kernels
    (on CPU their emulation, lane by lane), which read the same packed weights and caches."""
    from max.dtype import DType
    from max.graph import TensorType, ops
    n, d = x.shape
    layers = int(packed.shape[0]) // packed_size(int(d))
    h, frames = int(k_cache.shape[1]), int(cross_k.shape[3])
    width = warps_scratch_width(int(d), h, frames) if warps else SCRATCH_WIDTH * int(d)
    ys, _, logits, ln = ops.inplace_custom(
        "decoder_warps" if warps else "decoder_block", x.device,
        [x, mask, past, k_cache, v_cache, cross_k, cross_v, packed, rows, ln_w, ln_b, logits_w],
        [TensorType(DType.float32, [layers * n, d], device=x.device),
         TensorType(DType.float32, [n, width], device=x.device),
         TensorType(DType.float32, [batch * rows.shape[0], n_vocab], device=x.device),
         TensorType(DType.float32, [n, d], device=x.device)],
        parameters={"wdt": packed.dtype})
    return ys.tensor, logits.tensor, ln.tensor
