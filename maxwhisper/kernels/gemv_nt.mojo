"""Custom op gemv_nt: out (M, N) = x (M, K) @ W (N, K)^T, float32, for small M on CPU.

W arrives packed in panels (`maxwhisper.gemv.panels`): PANEL rows at a time, PK values of each row in
turn, so that the PANEL dot products of one panel read W as one sequential stream. Read row by row
instead (PANEL streams a row apart), the same bytes streamed measurably slower: a probe summing the
logits' 40 MB of half weights took 1.6-2.0 ms sequentially against 2.6-3.3 ms in rows of 4.
    W[n, k] is at ((n // PANEL * KP // PK + k // PK) * PANEL + n % PANEL) * PK + k % PK,
    KP = K rounded up to whole PK, N rounded up to whole panels, the padding zeros.

W is float32, or float16 widened to float32 as it is loaded (`vcvtph2ps`): the products and sums are
then the float32 ones, bit for bit, wherever W's values are half-representable (Whisper's checkpoints
are stored in half), while half the bytes are streamed. Each output is PK lanes of products summed in k
order, then the lanes added, then the K % PK remaining products: the same sums whatever the tiling.

W is streamed exactly once: N is split into contiguous chunks of whole panels across worker threads,
each chunk into cache blocks of panels, and within a block the rows of x are taken up to six at a time
while the block stays in L2: with 8-float vectors (AVX2) against half panels beyond two rows, for the
registers; with 16-float vectors (AVX-512) against whole panels, two of a panel's rows per vector.
"""

import extensibility
from extensibility import InputTensor, OutputTensor
from max.gpu.host import DeviceContext
from max.algorithm import parallelize
from std.sys import simd_width_of, size_of
from std.sys.intrinsics import prefetch, PrefetchOptions

comptime F32 = DType.float32
comptime PANEL = 4  # rows of W per packed panel
comptime PK = 8  # values of each row per step through a panel
comptime PV = SIMD[F32, PK]
comptime PV2 = SIMD[F32, 2 * PK]
comptime WIDE = simd_width_of[F32]() >= 2 * PK  # AVX-512: two panel rows per vector (_micro_pairs)
comptime FPtr = Pointer[Float32, MutAnyOrigin]
comptime WPtr[WT: DType] = Pointer[Scalar[WT], MutAnyOrigin]  # weights: float32 or float16
# Bytes of W kept in L2 per cache block (per core).
comptime L2_BLOCK_BYTES = 256 * 1024
# How far ahead of the step being read W is prefetched, in bytes.
comptime PREFETCH_BYTES = 4096


@always_inline
def padded_k(K: Int) -> Int:
    """K rounded up to whole steps of PK: the row length of W as packed."""
    return (K + PK - 1) // PK * PK


@always_inline
def _prefetch_step[WT: DType](panel: WPtr[WT], at: Int):
    """Prefetch the cache lines of W a step at `at` will read PREFETCH_BYTES from now."""
    comptime LINES = PANEL * PK * size_of[WT]() // 64  # cache lines per step
    comptime AHEAD = PREFETCH_BYTES // size_of[WT]()
    comptime for l in range(LINES):
        prefetch[PrefetchOptions().for_read().high_locality()](panel.unsafe_offset(at + AHEAD + l * 64 // size_of[WT]()))


@always_inline
def _store_output[WT: DType](
    lanes: PV, panel: WPtr[WT], xrow: FPtr, op: FPtr, K: Int, N: Int, m0: Int, n0: Int, i: Int, j: Int
):
    """out[m0 + i, n0 + j] = its PK lanes added, then the K % PK remaining products of x row i and panel row j
    (the rows below N only)."""
    if n0 + j >= N:
        return
    var steps = K // PK
    var total = lanes.reduce_add()
    for k in range(steps * PK, K):
        var w = panel.unsafe_load((steps * PANEL + j) * PK + k - steps * PK).cast[F32]()
        total += xrow.unsafe_load(i * K + k) * w
    op.unsafe_store((m0 + i) * N + n0 + j, total)


@always_inline
def _micro[MR: Int, WT: DType, J0: Int = 0, NJ: Int = PANEL](
    xp: FPtr, wp: WPtr[WT], op: FPtr, K: Int, N: Int, m0: Int, n0: Int
):
    """out[m0:m0+MR, n0+J0:n0+J0+NJ] = x[m0:m0+MR, :] . W[n0+J0:n0+J0+NJ, :]^T (the rows below N), n0 a
    panel start: rows J0 .. J0+NJ-1 of the panel (all PANEL, or half of it where MR rows of x leave too
    few registers for all)."""
    var KP = padded_k(K)
    var steps = K // PK
    var panel = wp.unsafe_offset(n0 * KP)
    var xrow = xp.unsafe_offset(m0 * K)
    var acc = Array[PV, MR * NJ](fill=PV(0))
    for s in range(steps):
        var at = s * PANEL * PK
        _prefetch_step[WT](panel, at)
        var wv = Array[PV, NJ](fill=PV(0))
        comptime for j in range(NJ):
            wv[j] = panel.unsafe_load[width=PK](at + (J0 + j) * PK).cast[F32]()
        comptime for i in range(MR):
            var xv = xrow.unsafe_load[width=PK](i * K + s * PK)
            comptime for j in range(NJ):
                acc[i * NJ + j] = xv.fma(wv[j], acc[i * NJ + j])
    comptime for i in range(MR):
        comptime for j in range(NJ):
            _store_output[WT](acc[i * NJ + j], panel, xrow, op, K, N, m0, n0, i, J0 + j)


@always_inline
def _micro_pairs[MR: Int, WT: DType](xp: FPtr, wp: WPtr[WT], op: FPtr, K: Int, N: Int, m0: Int, n0: Int):
    """_micro over a whole panel in vectors of 2 * PK lanes (AVX-512): each holds two of the panel's rows at
    one step, and x's PK values go to both halves. Every lane sums the same products in the same order as
    _micro's, and each row's PK lanes are added as _micro adds them: the same bits, in half the instructions
    (32 registers hold MR * 2 sums for MR up to 6, so no half panels)."""
    comptime PAIRS = PANEL // 2
    var KP = padded_k(K)
    var steps = K // PK
    var panel = wp.unsafe_offset(n0 * KP)
    var xrow = xp.unsafe_offset(m0 * K)
    var acc = Array[PV2, MR * PAIRS](fill=PV2(0))
    for s in range(steps):
        var at = s * PANEL * PK
        _prefetch_step[WT](panel, at)
        var wv = Array[PV2, PAIRS](fill=PV2(0))
        comptime for j in range(PAIRS):
            wv[j] = panel.unsafe_load[width=2 * PK](at + j * 2 * PK).cast[F32]()
        comptime for i in range(MR):
            var x8 = xrow.unsafe_load[width=PK](i * K + s * PK)
            var xv = x8.join(x8)
            comptime for j in range(PAIRS):
                acc[i * PAIRS + j] = xv.fma(wv[j], acc[i * PAIRS + j])
    comptime for i in range(MR):
        comptime for j in range(PANEL):
            _store_output[WT](acc[i * PAIRS + j // 2].slice[PK, offset=(j % 2) * PK](), panel, xrow, op, K, N, m0, n0, i, j)


@always_inline
def _tile[MR: Int, WT: DType, PAIRS: Bool](
    xp: FPtr, wp: WPtr[WT], op: FPtr, K: Int, N: Int, m0: Int, n_lo: Int, n_hi: Int
):
    """MR rows of x against the panels n_lo .. n_hi: in pairs of rows (PAIRS, where vectors hold 2 * PK
    floats); else whole panels up to 2 rows, half panels beyond. Both give the same bits."""
    var n = n_lo
    while n < n_hi:
        comptime if PAIRS:
            _micro_pairs[MR, WT](xp, wp, op, K, N, m0, n)
        elif MR <= 2:
            _micro[MR, WT](xp, wp, op, K, N, m0, n)
        else:
            _micro[MR, WT, 0, PANEL // 2](xp, wp, op, K, N, m0, n)
            _micro[MR, WT, PANEL // 2, PANEL // 2](xp, wp, op, K, N, m0, n)
        n += PANEL


@always_inline
def gemv_range[WT: DType, PAIRS: Bool = WIDE](
    xp: FPtr, wp: WPtr[WT], op: FPtr, M: Int, N: Int, K: Int, n_lo: Int, n_hi: Int
):
    """Columns n_lo..n_hi of out (M, N) = x @ W^T for packed W, n_lo a panel start (K > 0): W's panels in
    cache blocks, x's rows up to six at a time against each block."""
    var nb = max(PANEL, (L2_BLOCK_BYTES // (padded_k(K) * size_of[WT]())) // PANEL * PANEL)
    var b = n_lo
    while b < n_hi:
        var b_end = min(n_hi, b + nb)
        var m0 = 0
        while m0 < M:
            var mr = min(6, M - m0)
            if mr == 1:
                _tile[1, WT, PAIRS](xp, wp, op, K, N, m0, b, b_end)
            elif mr == 2:
                _tile[2, WT, PAIRS](xp, wp, op, K, N, m0, b, b_end)
            elif mr == 3:
                _tile[3, WT, PAIRS](xp, wp, op, K, N, m0, b, b_end)
            elif mr == 4:
                _tile[4, WT, PAIRS](xp, wp, op, K, N, m0, b, b_end)
            elif mr == 5:
                _tile[5, WT, PAIRS](xp, wp, op, K, N, m0, b, b_end)
            else:
                _tile[6, WT, PAIRS](xp, wp, op, K, N, m0, b, b_end)
            m0 += mr
        b = b_end


def gemv_nt_cpu[WT: DType, PAIRS: Bool](
    xp: FPtr, wp: WPtr[WT], op: FPtr, M: Int, N: Int, K: Int, items_per_worker: Int
):
    if M <= 0 or N <= 0:
        return
    if K <= 0:
        for i in range(M * N):
            op.unsafe_store(i, Float32(0))
        return
    # Contiguous chunks of N, whole panels each.
    var workers = 2
    var items = max(1, workers * items_per_worker)
    var chunk = (N + items - 1) // items
    chunk = (chunk + PANEL - 1) // PANEL * PANEL
    items = (N + chunk - 1) // chunk

    def work(t: Int) {var xp, var wp, var op, var M, var N, var K, var chunk}:
        gemv_range[WT, PAIRS](xp, wp, op, M, N, K, t * chunk, min(N, t * chunk + chunk))

    if items == 1:
        work(0)
    else:
        parallelize(work, items)


@extensibility.register("gemv_nt")
struct GemvNT:
    @staticmethod
    def execute[target: StaticString, wdt: DType, items_per_worker: Int = 1, pairs: Int = -1](
        output: OutputTensor[dtype=DType.float32, rank=2, ...],
        x: InputTensor[dtype=DType.float32, rank=2, ...],
        w: InputTensor[dtype=wdt, rank=1, ...],
        ctx: DeviceContext,
    ) raises:
        comptime if target != "cpu":
            raise Error("gemv_nt: CPU only")
        comptime if wdt != DType.float32 and wdt != DType.float16:
            raise Error("gemv_nt: w must be float32 or float16")
        var M = x.dim_size(0)
        var K = x.dim_size(1)
        var N = output.dim_size(1)
        if output.dim_size(0) != M or w.dim_size(0) != (N + PANEL - 1) // PANEL * PANEL * padded_k(K):
            raise Error("gemv_nt: w is not x's width and the output's length packed in panels")
        var xs = x.strides()
        var os = output.strides()
        if (K > 1 and xs[1] != 1) or (M > 1 and xs[0] != K) or (N > 1 and os[1] != 1) or (M > 1 and os[0] != N):
            raise Error("gemv_nt: x and the output must be contiguous row-major")
        # pairs: 1 or 0 forces _micro_pairs or _micro (the suite checks they agree bit for bit); -1: WIDE
        gemv_nt_cpu[wdt, WIDE if pairs < 0 else pairs == 1](
            x.unsafe_ptr(), w.unsafe_ptr(), output.unsafe_ptr(), M, N, K, items_per_worker
        )
