"""Python side of the ``gemv_nt`` custom Mojo op (maxwhisper/kernels/gemv_nt.mojo).

``gemv_nt(x, w)`` computes ``x @ w.T`` for float32 ``x`` (M, K) and ``w`` (N, K), with ``w``
row-major (PyTorch Linear layout, or the token embedding for the logits). It streams ``w``
once at close to memory bandwidth, which MAX's ``ops.matmul`` does not for small M.

A graph that uses it must be built with ``custom_extensions=[KERNELS_PATH]``.
"""

from __future__ import annotations

from pathlib import Path

from max.dtype import DType
from max.graph import TensorType, TensorValue, ops

KERNELS_PATH = Path(__file__).resolve().parent / "kernels"
"""Directory of the Mojo kernels; pass it as ``Graph(..., custom_extensions=[KERNELS_PATH])``."""


def gemv_nt(x: TensorValue, w: TensorValue, *, items_per_worker: int = 1) -> TensorValue:
    """Return ``x @ w.T`` (M, N) for float32 x (M, K) and w (N, K), both rank 2, on CPU.

    Dimensions may be symbolic; the output type is built from ``x.shape[0]`` and ``w.shape[0]``.
    ``items_per_worker`` splits N into ``2 * items_per_worker`` contiguous chunks.
    """
    if x.rank != 2 or w.rank != 2:
        raise ValueError(f"gemv_nt wants rank-2 x and w, got {x.shape} and {w.shape}")
    if x.dtype != DType.float32 or w.dtype != DType.float32:
        raise ValueError(f"gemv_nt is float32 only, got {x.dtype} and {w.dtype}")
    out_type = TensorType(DType.float32, [x.shape[0], w.shape[0]], device=x.device)
    return ops.custom(
        "gemv_nt",
        x.device,
        [x, w],
        [out_type],
        parameters={"items_per_worker": int(items_per_worker)},
    )[0].tensor
