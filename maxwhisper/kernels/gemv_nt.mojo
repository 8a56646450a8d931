"""Custom op gemv_nt: out (M, N) = x (M, K) @ w (N, K)^T, float32, for small M on CPU.

W is float32, or float16 widened to float32 as it is loaded (`vcvtph2ps`): the products and sums are
then the float32 ones, bit for bit, wherever W's values are half-representable (Whisper's checkpoints
are stored in half), while half the bytes are streamed.

W is row-major (N, K) (PyTorch Linear layout, or the token embedding for the logits),
so each output column is a dot product with one contiguous row of W. W is streamed
sequentially exactly once: N is split into contiguous chunks across worker threads,
each chunk into cache blocks of rows, and within a block the rows of x are taken in
register tiles of up to 6 rows while the block stays in L2.
"""

import extensibility
from extensibility import InputTensor, OutputTensor
from max.gpu.host import DeviceContext
from max.algorithm import parallelize
from std.sys import simd_width_of, size_of
from std.sys.intrinsics import prefetch, PrefetchOptions

comptime F32 = DType.float32
comptime VW = simd_width_of[F32]()
comptime FPtr = Pointer[Float32, MutAnyOrigin]
comptime WPtr[WT: DType] = Pointer[Scalar[WT], MutAnyOrigin]  # weights: float32 or float16
comptime Vec = SIMD[F32, VW]
# Bytes of W kept in L2 per cache block (per core).
comptime L2_BLOCK_BYTES = 256 * 1024
# Panels of NR rows of W prefetched ahead of the one being read (measured with float16 W, the logits
# product at batch 1: 2.9 ms median against 3.4 ms without; float32 W within noise either way).
comptime PREFETCH_PANELS = 8


@always_inline
def _micro[MR: Int, NR: Int, WT: DType](
    xp: FPtr, wp: WPtr[WT], op: FPtr, K: Int, N: Int, m0: Int, n0: Int
):
    """out[m0:m0+MR, n0:n0+NR] = x[m0:m0+MR, :] . w[n0:n0+NR, :]^T."""
    var acc = Array[Vec, MR * NR](fill=Vec(0))
    var kv = K - K % VW
    var xrow = xp.unsafe_offset(m0 * K)
    var wrow = wp.unsafe_offset(n0 * K)
    var k = 0
    while k < kv:
        var wv = Array[Vec, NR](fill=Vec(0))
        comptime for j in range(NR):
            prefetch[PrefetchOptions().for_read().high_locality()](
                wrow.unsafe_offset((j + NR * PREFETCH_PANELS) * K + k)
            )
        comptime for j in range(NR):
            wv[j] = wrow.unsafe_load[width=VW](j * K + k).cast[F32]()
        comptime for i in range(MR):
            var xv = xrow.unsafe_load[width=VW](i * K + k)
            comptime for j in range(NR):
                acc[i * NR + j] = xv.fma(wv[j], acc[i * NR + j])
        k += VW
    comptime for i in range(MR):
        comptime for j in range(NR):
            var s = acc[i * NR + j].reduce_add()
            for kk in range(kv, K):
                s += xrow.unsafe_load(i * K + kk) * wrow.unsafe_load(j * K + kk).cast[F32]()
            op.unsafe_store((m0 + i) * N + n0 + j, s)


@always_inline
def _panel[MR: Int, NR: Int, WT: DType](
    xp: FPtr, wp: WPtr[WT], op: FPtr, K: Int, N: Int, m0: Int, n_begin: Int, n_end: Int
):
    var n = n_begin
    while n + NR <= n_end:
        _micro[MR, NR, WT](xp, wp, op, K, N, m0, n)
        n += NR
    while n < n_end:
        _micro[MR, 1, WT](xp, wp, op, K, N, m0, n)
        n += 1


@always_inline
def _rows[WT: DType](
    mr: Int, xp: FPtr, wp: WPtr[WT], op: FPtr, K: Int, N: Int, m0: Int, n_begin: Int, n_end: Int
):
    if mr == 1:
        _panel[1, 4, WT](xp, wp, op, K, N, m0, n_begin, n_end)
    elif mr == 2:
        _panel[2, 4, WT](xp, wp, op, K, N, m0, n_begin, n_end)
    elif mr == 3:
        _panel[3, 3, WT](xp, wp, op, K, N, m0, n_begin, n_end)
    elif mr == 4:
        _panel[4, 3, WT](xp, wp, op, K, N, m0, n_begin, n_end)
    elif mr == 5:
        _panel[5, 2, WT](xp, wp, op, K, N, m0, n_begin, n_end)
    else:
        _panel[6, 2, WT](xp, wp, op, K, N, m0, n_begin, n_end)


@always_inline
def gemv_range[WT: DType](
    xp: FPtr, wp: WPtr[WT], op: FPtr, M: Int, N: Int, K: Int, n_lo: Int, n_hi: Int
):
    """Columns n_lo..n_hi of out (M, N) = x @ w^T, W's rows in cache blocks, x's rows in register tiles
    (K > 0). Each output is the same sum in the same order whatever the range: chunks give equal bits."""
    var nb = max(8, (L2_BLOCK_BYTES // (K * size_of[WT]())) // 4 * 4)
    var b = n_lo
    while b < n_hi:
        var b_end = min(n_hi, b + nb)
        var m0 = 0
        while m0 < M:
            var mr = min(6, M - m0)
            _rows[WT](mr, xp, wp, op, K, N, m0, b, b_end)
            m0 += mr
        b = b_end


def gemv_nt_cpu[WT: DType](
    xp: FPtr, wp: WPtr[WT], op: FPtr, M: Int, N: Int, K: Int, items_per_worker: Int
):
    if M <= 0 or N <= 0:
        return
    if K <= 0:
        for i in range(M * N):
            op.unsafe_store(i, Float32(0))
        return
    # Contiguous chunks of N, a multiple of 4 rows each.
    var workers = 2
    var items = max(1, workers * items_per_worker)
    var chunk = (N + items - 1) // items
    chunk = (chunk + 3) // 4 * 4
    items = (N + chunk - 1) // chunk

    def work(t: Int) {var xp, var wp, var op, var M, var N, var K, var chunk}:
        gemv_range[WT](xp, wp, op, M, N, K, t * chunk, min(N, t * chunk + chunk))

    if items == 1:
        work(0)
    else:
        parallelize(work, items)


@extensibility.register("gemv_nt")
struct GemvNT:
    @staticmethod
    def execute[target: StaticString, wdt: DType, items_per_worker: Int = 1](
        output: OutputTensor[dtype=DType.float32, rank=2, ...],
        x: InputTensor[dtype=DType.float32, rank=2, ...],
        w: InputTensor[dtype=wdt, rank=2, ...],
        ctx: DeviceContext,
    ) raises:
        comptime if target != "cpu":
            raise Error("gemv_nt: CPU only")
        comptime if wdt != DType.float32 and wdt != DType.float16:
            raise Error("gemv_nt: w must be float32 or float16")
        var M = x.dim_size(0)
        var K = x.dim_size(1)
        var N = w.dim_size(0)
        if w.dim_size(1) != K or output.dim_size(0) != M or output.dim_size(1) != N:
            raise Error("gemv_nt: shape mismatch")
        var xs = x.strides()
        var ws = w.strides()
        var os = output.strides()
        if (
            (K > 1 and (xs[1] != 1 or ws[1] != 1))
            or (M > 1 and xs[0] != K)
            or (N > 1 and (ws[0] != K or os[1] != 1))
            or (M > 1 and os[0] != N)
        ):
            raise Error("gemv_nt: x, w and the output must be contiguous row-major")
        gemv_nt_cpu(
            x.unsafe_ptr(), w.unsafe_ptr(), output.unsafe_ptr(), M, N, K, items_per_worker
        )
