"""float32 matrix products and convolutions that stay float32 where the hardware rounds them like TF32.

MAX 26.7 runs float32 products on NVIDIA GPUs through TF32 (11 significant bits): on an H200 the encoder
and decoder came out ~1e-3 off PyTorch's float32, enough to change a token of the long clip, and no switch
turns it off. So on GPU every float32 product is computed from parts that TF32 holds exactly:

    x = x0 + x1 + x2    each part a bfloat16 value (8 significant bits) held in float32
    x @ w = sum over part pairs (i, j) with i + j <= 2 of xi @ wj, smallest terms first

Each part product is exact and accumulates in float32; the dropped pairs are below 2^-24 of the product,
float32's own rounding. A weight that TF32 holds exactly (11 significant bits: Whisper's checkpoints are
half precision) is one part, so its product is three exact terms, x0 @ w + x1 @ w + x2 @ w; other weights
are split into three parts once on the host (`weight_parts`). Activations are split in the graph. A
weight product reads the weight once: its parts are concatenated along the output axis and the
activation's parts stacked along a leading one, one matrix product in all.
Measured: on the CPU (where products are float32's) the same graphs meet the CPU's float32 tolerances; on
GPUs they took the encoder from TF32's NMSE ~1e-5 (an H200) to 2e-11 - 8e-11 (an H100), where the exact
float32 encoder took 20.2 ms at batch 1 against bfloat16's 3.69 ms in the same run (with the convolutions as
matrix products; 98.6 and 32.6 ms before).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

PARTS = 3  # of an activation; a weight has 1 or 3 (`n_weight_parts`)


def weight_parts(w: np.ndarray, n: int = PARTS) -> list[np.ndarray]:
    """`w` (float32) as `n` bfloat16-exact float32 arrays, largest first; their sum is `w` exactly for n = 3."""
    rest, parts = torch.from_numpy(np.ascontiguousarray(w, np.float32)), []
    for _ in range(n - 1):
        hi = rest.to(torch.bfloat16).float()
        parts.append(hi.numpy())
        rest = rest - hi
    return parts + [rest.numpy()]


def tf32_exact(w: np.ndarray) -> bool:
    """Whether every float32 value of `w` has at most 11 significant bits (TF32 holds it exactly)."""
    return not (np.ascontiguousarray(w, np.float32).view(np.uint32) & 0x1FFF).any()


def n_weight_parts(weights: list[np.ndarray]) -> int:
    """1 when TF32 holds every weight exactly (half-precision values: Whisper's checkpoints), else 3."""
    return 1 if all(tf32_exact(w) for w in weights) else PARTS


def wanted(requested: bool | None, device: str, dtype: str) -> bool:
    """Whether a graph computes exact products: as `requested`, by default on GPU in float32 (TF32 there)."""
    return device == "gpu" and dtype == "float32" if requested is None else requested


_PARTS: dict[tuple[str, tuple[str, ...]], int] = {}


def parts_for(checkpoint: str, weights: Callable[[], dict[str, np.ndarray]], product_names: tuple[str, ...]) -> int:
    """n_weight_parts of the weights named ending in `product_names`, read once per `checkpoint` (its hash)."""
    if (checkpoint, product_names) not in _PARTS:
        _PARTS[checkpoint, product_names] = n_weight_parts([w for k, w in weights().items() if k.endswith(product_names)])
    return _PARTS[checkpoint, product_names]


def joined_parts(w: np.ndarray, n: int, axis: int = -1) -> np.ndarray:
    """`w`'s `n` parts (1: `w` itself, which TF32 must hold) concatenated along `axis` (a product's output axis)."""
    if n == 1:
        if not tf32_exact(w):
            raise ValueError("a weight of more than 11 significant bits needs three parts")
        return np.ascontiguousarray(w, np.float32)
    return np.ascontiguousarray(np.concatenate(weight_parts(w, n), axis=axis))


def _pairs(n_right: int) -> list[tuple[int, int]]:
    """The part pairs kept, smallest terms first (summed in this order)."""
    pairs = [(i, j) for i in range(PARTS) for j in range(n_right) if i + j < PARTS]
    return sorted(pairs, key=lambda ij: -(ij[0] + ij[1]))


def _sum(term, pairs):
    total = None
    for i, j in pairs:
        total = term(i, j) if total is None else total + term(i, j)
    return total


def split(x) -> list:
    """A float32 graph tensor as PARTS bfloat16-exact float32 tensors, largest first (they sum to x)."""
    from max.dtype import DType
    from max.graph import ops
    parts = []
    for _ in range(PARTS - 1):
        hi = ops.cast(ops.cast(x, DType.bfloat16), DType.float32)
        parts.append(hi)
        x = x - hi
    return parts + [x]


def linear(x, w, n_out: int, n_parts: int):
    """x (..., k) @ W (k, n_out), W given as its `n_parts` parts joined along columns, (k, n_parts * n_out)."""
    from max.graph import ops
    lead = list(x.shape[:-1])
    y = ops.stack(split(x), axis=0) @ w  # (PARTS, ..., n_parts * n_out): one product, the weight read once
    if n_parts == 1:  # a weight TF32 holds exactly: the three terms x_i @ w
        return _sum(lambda i, _: y[i], _pairs(1))
    y = ops.permute(ops.reshape(y, [PARTS, -1, n_parts, n_out]), [0, 2, 1, 3])  # (PARTS, n_parts, rows, n_out)
    total = _sum(lambda i, j: y[i][j], _pairs(n_parts))
    return ops.reshape(total, [*lead, n_out]) if len(lead) > 1 else total


def matmul(a, b, stacked: bool = True):
    """a (lead..., t, k) @ b (lead..., k, s) for two float32 graph tensors (activations: both split here).
    `stacked`: the kept part pairs as one batched product (fewest kernels: the decoder's small products);
    else one product per pair (the encoder's 1500 x 1500 scores: stacked, six pairs at batch 32 asked an
    H100 for 42 GB)."""
    from max.graph import ops
    lead, t, k, s = list(a.shape[:-2]), a.shape[-2], a.shape[-1], b.shape[-1]
    pairs, a_parts, b_parts = _pairs(PARTS), split(a), split(b)
    if not stacked:
        return _sum(lambda i, j: a_parts[i] @ b_parts[j], pairs)
    lhs = ops.reshape(ops.stack([a_parts[i] for i, _ in pairs], axis=0), [-1, t, k])  # MAX's batched products
    rhs = ops.reshape(ops.stack([b_parts[j] for _, j in pairs], axis=0), [-1, k, s])  # take rank 4 at most
    y = ops.reshape(lhs @ rhs, [len(pairs), -1, t, s])
    total = _sum(lambda p, _: y[p], [(p, None) for p in range(len(pairs))])
    return ops.reshape(total, [-1, *lead[1:], t, s]).rebind([*lead, t, s])


def conv1d(x, w, n_out: int, n_parts: int, stride: int):
    """Whisper's Conv1d(k=3, padding=1) on (batch, time, channels) without bias, the RSCF filter given as
    `n_parts` parts joined along output channels, (1, 3, c_in, n_parts * n_out)."""
    from max.graph import ops
    xs = ops.stack(split(x), axis=1)  # (batch, PARTS, time, c_in): the parts as the image's rows, one convolution
    y = ops.conv2d(xs, w, stride=(1, stride), padding=(0, 0, 1, 1))  # (batch, PARTS, time', n_parts * n_out)
    b, t = y.shape[0], y.shape[2]
    y = ops.reshape(y.rebind([b, PARTS, t, n_parts * n_out]), [b, PARTS, t, n_parts, n_out])  # n_out may be symbolic
    y = ops.permute(y, [1, 3, 0, 2, 4])
    return _sum(lambda i, j: y[i][j], _pairs(n_parts))
