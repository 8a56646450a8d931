"""Custom op decoder_warps: the decoder_block op (same inputs, outputs and packed weights) as GPU kernels
in which one warp of 32 lanes computes one output, float32 on CUDA cores (no TF32 anywhere).

A step is 9 kernels per block plus 2 (the final LayerNorm, the logits): 38 for tiny.en, against about
100 graph kernels of the graph-op step, and each warp reads its weight row once, in gemv_nt's panels
(lane l takes the row's steps of PK values l, l + 32, ...: one 32-byte sector each). The stages:

    qkv          warp (row, output) of LayerNorm(y) @ qkv^T: q to scratch, k and v into the caches at P + t
    self attend  warp (row, head, G channels), keys over the lanes: each lane its keys' scores (q . k * 0.125,
                 plus the causal mask for new keys) and their softmax and mix, in one pass (_softmax_mix)
    out          warp (row, output): y = y_in + att @ out^T + b
    cross q      as qkv's q
    cross mix    warp (row, head, chunk of 32 keys): a key per lane for the scores, then channels over the
                 lanes (two each, every key's values one coalesced row): the chunk's score max, its sum of
                 exponentials and its mix of values
    cross merge  warp (row, head, G channels), chunks over the lanes: the chunks' mixes at the head's max
    cross out    as out
    fc1, fc2     LayerNorm(y) @ fc1^T + b, GELU; then y += hidden @ fc2^T + b
    final ln     warp (row); logits: warp (two panels of 4 vocabulary rows, logits row), a half-warp per panel
                 read in order (lane l takes steps (l % 16) // 4, + 4, ... of the panel's row l % 4)

The cross mix is split because the audio window is long: a warp per channel over all 1500 keys took 34 us a
layer on an H200 (ncu, 2026-11-27), a third of the step, where the split's 282 warps read each key's values
once, in rows, and the merge reads 47 chunks' partial sums: 6.7-7.7 us a layer on the same H200. The scores
were a kernel of their own before each attention (46 launches a step); a warp now computes the scores it
mixes, from the keys in L1 or L2.

Each stage is a programmatic dependent launch (Hopper and later; MAXWHISPER_WARPS_PDL=0 turns it off): its
blocks start while the stage before still runs, issue their L2 prefetches, then wait for it to finish. A
captured step, batch 1, cache 100, took 0.268-0.279 ms with it against 0.278-0.324 ms without on one H200 and
0.289 against 0.329-0.332 ms on another (3 interleaved rounds each, 2026-11-27; docs/gpu.md).

A LayerNorm is recomputed by every warp that reads its row (two lane-strided passes, mean then centred
variance), so it costs no kernel of its own. The cache count P is read on the device, so a captured graph
replays the op unchanged.

The same item functions run on the CPU as the op's emulation (target "cpu"): each exchange between lanes
(`_reduce`, `_sums`, `_from_lane`, `_quad_sum`, over the lanes' values that `_lane_values` gathers) and each
per-lane body (`_each`) is the 32 lanes in turn there (unrolled) and a warp shuffle on the GPU. Two things
more differ: a CPU worker computes a row's LayerNorm statistics once for all its items of that row
(`_linear_total`'s memo), with the same `_ln_stats`, where each warp computes them again; and the cross mix's
lane loads its key's DH channels in one strided load, where a GPU lane loads the same addresses one by one. None
of the three changes a bit of the emulation's outputs (scripts/kernel_bits.py); together they made it
2.2-3.8x faster (AMD EPYC Zen 4, 2026-11-28: a single step 42 to 11 ms, 5 rows of 24 new tokens 1.76 to
0.80 s, a 445-token prefill 7.4 to 3.2 s). The suite
checks the emulation against PyTorch exactly as it checks the CPU kernel, so only the kernel launch (with its
L2 prefetch) and the shuffles are GPU-only code; `mojo build --target-accelerator` compiles it for sm_90 in the
unit tests (tests/unit/test_warps_build.py).
"""

import extensibility
from extensibility import InputTensor, OutputTensor
from extensibility import _MutableInputTensor as MutableInputTensor
from max.gpu import global_idx, lane_id
from max.gpu.primitives import warp
from max.gpu.primitives.grid_controls import PDLLevel, launch_dependent_grids, pdl_launch_attributes
from max.gpu.primitives.grid_controls import wait_on_dependent_grids
from max.gpu.host import DeviceContext
from max.algorithm import parallelize
from std.math import exp, erf, sqrt
from std.memory import stack_allocation
from std.os import getenv
from std.sys import num_physical_cores, size_of
from std.sys.intrinsics import prefetch, PrefetchOptions, strided_load
from std.sys._assembly import inlined_assembly

from .decoder_block import DH, MAX_CROSS, MAX_LAYERS, MAX_SELF, _packed_len
from .gemv_nt import PANEL, PK, WPtr

comptime F32 = DType.float32
comptime FPtr = Pointer[Float32, MutAnyOrigin]
comptime LPtr = Pointer[Int64, MutAnyOrigin]
comptime LANES = 32  # an NVIDIA warp (maxwhisper.decoder refuses the op on other GPUs)
comptime SCALE: Float32 = 0.125  # 1 / sqrt(DH): a power of two, so q . k * SCALE rounds as (q k^T) / 8
comptime LN_EPS: Float32 = 1e-5
# Threads per thread block: the logits' 6483 warps (tiny.en) fill the GPU at 8 warps a block; every other stage
# has 48 to 1536 warps, and at 8 a block 384 of them ran on 48 of an H100's 132 SMs, so they take 2 a block
# unless MAXWHISPER_WARPS_BLOCK says otherwise (read at each call of the op; a captured step keeps its own).
comptime LOGITS_THREADS = 256
comptime BLOCK_THREADS = 64
# Every PK-value load starts at a multiple of PK values: at least 16 bytes apart from the buffer's start, which
# numpy-backed buffers (the CPU's caches) align to 16. Declared, it makes each load one or two vector loads
# (ld.global.v4) on the GPU instead of PK scalar ones.
comptime ALIGN = 16
# The stages, in the order a block runs them; FINAL_LN and LOGITS follow the last block.
comptime QKV = 0
comptime SELF_ATTEND = 1
comptime OUT = 2
comptime CROSS_Q = 3
comptime CROSS_MIX = 4
comptime CROSS_MERGE = 5
comptime CROSS_OUT = 6
comptime FC1 = 7
comptime FC2 = 8
comptime FINAL_LN = 9
comptime LOGITS = 10
# Scratch per row (its width SW, a multiple of PK): q [0, D), the attention output [D, 2D), the MLP's
# hidden layer [2D, 6D), then the cross mix's partial sums: per head and chunk of KC keys, its score max and
# sum of exponentials, two unused values, and DH mixed channels (from PART_X: whole 16 bytes in).
comptime ATT = 1  # offsets in multiples of D
comptime HIDDEN = 2
comptime PARTS = 6
comptime KC = LANES  # keys per cross-mix chunk
comptime PART_X = 4  # where a chunk's mixed channels start
comptime PART = DH + PART_X  # one chunk's partial sums
comptime G = 8  # channels per warp of the self-attention and the cross merge
comptime NW = 16  # a softmax term's vector (_softmax_mix): G values, score, weight, unused


@always_inline
def _chunks(C: Int) -> Int:
    """Cross-mix chunks of an audio window of C frames."""
    return (C + KC - 1) // KC


@always_inline
def scratch_width(D: Int, H: Int, C: Int) -> Int:
    """Scratch values per row (maxwhisper.fused.warps_scratch_width), whole steps of PK."""
    return (PARTS * D + H * _chunks(C) * PART + PK - 1) // PK * PK


@always_inline
def _lane_values[gpu: Bool, N: Int, F: def(Int) -> SIMD[F32, N]](part: F) -> SIMD[F32, N * (1 if gpu else LANES)]:
    """part(lane) (N values) of this lane on the GPU; of every lane in turn (lane l at N l) in the emulation.
    A lane's values are computed once, whatever reductions (`_reduce`) they then feed."""
    comptime if gpu:
        return rebind[SIMD[F32, N * (1 if gpu else LANES)]](part(Int(lane_id())))
    else:
        var all = SIMD[F32, N * (1 if gpu else LANES)](0)
        comptime for l in range(LANES):
            var v = part(l)
            comptime for k in range(N):
                all[N * l + k] = v[k]
        return all


@always_inline
def _reduce[gpu: Bool, is_max: Bool](v: SIMD[F32, _]) -> Float32:
    """The sum (or max) over the lanes of v: a shuffle of each lane's one value on the GPU; the emulation's
    vector holds every lane's."""
    comptime if gpu:
        comptime if is_max:
            return warp.max(v[0])
        else:
            return warp.sum(v[0])
    else:
        comptime if is_max:
            return v.reduce_max()
        else:
            return v.reduce_add()


@always_inline
def _sums[gpu: Bool, N: Int, count: Int](v: SIMD[F32, N * (1 if gpu else LANES)]) -> SIMD[F32, N]:
    """The sums over the lanes of the first `count` of the N values per lane that `_lane_values` gathered
    (the rest 0)."""
    var out = SIMD[F32, N](0)
    comptime for k in range(count):
        comptime if gpu:
            out[k] = warp.sum(v[k])
        else:
            var t: Float32 = 0
            for l in range(LANES):
                t += v[N * l + k]
            out[k] = t
    return out


@always_inline
def _from_lane[gpu: Bool](v: SIMD[F32, _], lane: Int) -> Float32:
    """Lane `lane`'s value of v, in every lane: a shuffle on the GPU; the emulation's vector holds every lane's."""
    comptime if gpu:
        return warp.shuffle_idx(v[0], UInt32(lane))
    else:
        return v[lane]


@always_inline
def _quad_sum[gpu: Bool](v: SIMD[F32, _], l: Int) -> Float32:
    """The sum of v over lanes l, l ^ 4, l ^ 8 and l ^ 12, as the butterfly of two shuffles adds them."""
    comptime if gpu:
        var t = v[0] + warp.shuffle_xor(v[0], UInt32(4))
        return t + warp.shuffle_xor(t, UInt32(8))
    else:
        return (v[l] + v[l ^ 4]) + (v[l ^ 8] + v[l ^ 12])


@always_inline
def _sum[gpu: Bool, F: def(Int) -> Float32](part: F) -> Float32:
    """The sum over the 32 lanes of part(lane)."""
    return _reduce[gpu, False](_lane_values[gpu, 1](part))


@always_inline
def _each[gpu: Bool, F: def(Int) -> None](body: F):
    """body(lane) for every lane: each lane its own on the GPU, all in turn in the emulation."""
    comptime if gpu:
        body(Int(lane_id()))
    else:
        comptime for l in range(LANES):
            body(l)


@always_inline
def _lead[gpu: Bool]() -> Bool:
    """Whether this lane writes a warp's result: lane 0 on the GPU; the emulation's one pass."""
    comptime if gpu:
        return lane_id() == 0
    else:
        return True


@always_inline
def _at(D: Int, index: Int) -> Int:
    """Offset of the index-th weight of a block's packed vector (maxwhisper.fused.PACKED order: the matrices
    qkv.w 3D x D, out.w, cross_q.w, cross_out.w D x D, fc1.w and fc2.w 4D x D; qkv.b 3D, fc1.b 4D; the rest D)."""
    var o = 0
    for i in range(index):
        if i == 2:
            o += 3 * D * D
        elif i == 4 or i == 8 or i == 10:
            o += D * D
        elif i == 14 or i == 16:
            o += 4 * D * D
        else:
            o += (3 if i == 3 else (4 if i == 15 else 1)) * D
    return o


# Loads in flight per lane: each lane loop reads U of its elements (clamped to the last, weighted 0 past the
# end) before it uses them. A warp does little work, so a loop that waited for each load in turn (300-600
# cycles from L2 or memory) would take the kernel's time.
comptime U = 4
comptime UL = 12  # the logits' loads in flight per lane: all of a lane's steps for a width of 384 (tiny)


@always_inline
def _ln_stats[gpu: Bool](xr: FPtr, D: Int) -> Tuple[Float32, Float32]:
    """Mean and 1 / standard deviation of the row xr (D values, whole steps of PK): each lane's steps of PK,
    summed, then centred and squared, from the same loads (U at a time)."""
    var steps = D // PK

    def part(l: Int) {var xr, var steps} -> Float32:
        var t = SIMD[F32, PK](0)
        for base in range(l, steps, LANES * U):
            comptime for u in range(U):
                var st = base + u * LANES
                var xv = xr.unsafe_load[width=PK, alignment=ALIGN](min(st, steps - 1) * PK)
                t += xv if st < steps else SIMD[F32, PK](0)
        return t.reduce_add()
    var mean = _sum[gpu](part) / Float32(D)

    def centred(l: Int) {var xr, var steps, var mean} -> Float32:
        var t = SIMD[F32, PK](0)
        for base in range(l, steps, LANES * U):
            comptime for u in range(U):
                var st = base + u * LANES
                var c = xr.unsafe_load[width=PK, alignment=ALIGN](min(st, steps - 1) * PK) - mean
                t += c * c if st < steps else SIMD[F32, PK](0)
        return t.reduce_add()
    var variance = _sum[gpu](centred) / Float32(D)
    return (mean, 1 / sqrt(variance + LN_EPS))


@always_inline
def _dot_lane[WT: DType, LN: Bool](
    xr: FPtr, wp: WPtr[WT], n: Int, K: Int, l: Int, mean: Float32, rstd: Float32, g: WPtr[WT], b: WPtr[WT]
) -> Float32:
    """Lane l's part of row xr (K values; LN: LayerNorm'd with mean, rstd, g, b) . row n of W (N, K) in
    gemv_nt's panels: its steps of PK values l, l + LANES, ..., U at a time (W[n, k] at (n // PANEL) *
    PANEL * K + (k // PK) * PANEL * PK + (n % PANEL) * PK + k % PK)."""
    var row = wp.unsafe_offset((n // PANEL) * PANEL * K + (n % PANEL) * PK)
    var steps = K // PK
    var acc = SIMD[F32, PK](0)
    for base in range(l, steps, LANES * U):
        comptime for u in range(U):
            var st = base + u * LANES
            var at = min(st, steps - 1)
            var xv = xr.unsafe_load[width=PK, alignment=ALIGN](at * PK)
            comptime if LN:
                xv = (xv - mean) * rstd * g.unsafe_load[width=PK, alignment=ALIGN](at * PK).cast[F32]() + b.unsafe_load[
                    width=PK, alignment=ALIGN
                ](at * PK).cast[F32]()
            var product = xv * row.unsafe_load[width=PK, alignment=ALIGN](at * PANEL * PK).cast[F32]()
            acc += product if st < steps else SIMD[F32, PK](0)
    return acc.reduce_add()


@always_inline
def _linear_total[gpu: Bool, WT: DType, LN: Bool](
    xr: FPtr, wp: WPtr[WT], n: Int, K: Int, g: WPtr[WT], b: WPtr[WT], memo: FPtr, row: Int
) -> Float32:
    """Row xr (LayerNorm'd with g, b if LN) . row n of W: the warp's total. `memo`, the emulation's only: the
    last row's number, mean and 1 / standard deviation, so that a worker computes a row's statistics once for
    all its items of that row (the same `_ln_stats`, so the same values) instead of once per warp."""
    var mean: Float32 = 0
    var rstd: Float32 = 1
    comptime if LN:
        comptime if gpu:
            mean, rstd = _ln_stats[gpu](xr, K)
        else:
            if memo.unsafe_load(0) != Float32(row):
                mean, rstd = _ln_stats[gpu](xr, K)
                memo.unsafe_store(0, Float32(row))
                memo.unsafe_store(1, mean)
                memo.unsafe_store(2, rstd)
            mean, rstd = memo.unsafe_load(1), memo.unsafe_load(2)

    def part(l: Int) {var xr, var wp, var n, var K, var mean, var rstd, var g, var b} -> Float32:
        return _dot_lane[WT, LN](xr, wp, n, K, l, mean, rstd, g, b)
    return _sum[gpu](part)


@always_inline
def _softmax_mix[gpu: Bool, U: Int, F: def(Int) -> SIMD[F32, NW]](term: F, n: Int) -> SIMD[F32, G]:
    """sum_j exp(s_j) x_j / sum_j exp(s_j) w_j over j < n, for the terms term(j) = (x_j: G values, s_j, w_j,
    unused), j strided over the lanes, in one pass (online softmax): each lane keeps the max of its scores and
    its sums of their weighted exponentials and of those times the values, rescaled as its max grows; the
    lanes' sums are then rescaled to the warp's max and added. Masked scores (-inf) count for nothing. A lane
    computes U terms (their loads in flight together) before it adds them in. The self-attention's terms are a
    key's score, computed by the lane, 1 and G channels of its value; the cross merge's are the chunks' maxima,
    sums of exponentials and mixes, each at its own chunk's max."""
    def lane(l: Int) {ref term, var n} -> SIMD[F32, NW]:
        var m = -Float32.MAX
        var total: Float32 = 0
        var mixed = SIMD[F32, G](0)
        for base in range(l, n, LANES * U):
            var terms = SIMD[F32, NW * U](0)
            comptime for u in range(U):  # the loads first, U terms in flight
                terms = terms.insert[offset=NW * u](term(min(base + u * LANES, n - 1)))
            comptime for u in range(U):
                var score = terms[NW * u + G]
                var x = terms.slice[G, offset=NW * u]()
                if base + u * LANES < n and score > -Float32.MAX:
                    if score > m:
                        var f = exp(m - score)
                        total = total * f + terms[NW * u + G + 1]
                        mixed = mixed * f + x
                        m = score
                    else:
                        var e = exp(score - m)
                        total += e * terms[NW * u + G + 1]
                        mixed += e * x
        var out = SIMD[F32, NW](0).insert[offset=0](mixed)
        out[G] = total
        out[NW - 1] = m
        return out
    var lanes = _lane_values[gpu, NW](lane)
    comptime W = 1 if gpu else LANES
    var m = SIMD[F32, W](0)
    comptime for l in range(W):
        m[l] = lanes[NW * l + NW - 1]
    var scale = exp(m - _reduce[gpu, True](m))  # each lane's sums at the warp's max (0 for a lane of no keys)
    comptime for l in range(W):
        comptime for k in range(G + 1):
            lanes[NW * l + k] *= scale[l]
    var sums = _sums[gpu, NW, G + 1](lanes)
    return sums.slice[G, offset=0]() / sums[G]


@always_inline
def _item[gpu: Bool, WT: DType, stage: Int](
    i: Int, x: FPtr, mask: FPtr, past: LPtr, kc: FPtr, vc: FPtr, ck: FPtr, cv: FPtr, w: WPtr[WT], ys: FPtr,
    sc: FPtr, rows: LPtr, ln_w: FPtr, ln_b: FPtr, lw: WPtr[WT], logits: FPtr, ln: FPtr,
    layer: Int, A: Int, B: Int, T: Int, CAP: Int, H: Int, D: Int, C: Int, K: Int, V: Int, SW: Int,
    memo: FPtr,
):
    """Work item i of `stage` (of block `layer`): one warp's output(s); see the module docstring. `memo`: the
    emulation's LayerNorm statistics (`_linear_total`)."""
    var R = B * T
    var P = Int(past.unsafe_load(0))
    var wl = w.unsafe_offset(layer * _packed_len(D))
    var y_in = x if layer == 0 else ys.unsafe_offset((layer - 1) * R * D)
    var y = ys.unsafe_offset(layer * R * D)
    var NC = _chunks(C)
    var parts = sc.unsafe_offset(PARTS * D)  # row r's partial sums at r * SW
    var self_len = B * H * CAP * DH  # one layer's cache
    var cross_len = A * H * DH * C  # one layer's cross keys (or values)
    comptime if stage == QKV:
        var r = i // (3 * D)
        var n = i % (3 * D)
        var total = _linear_total[gpu, WT, True](y_in.unsafe_offset(r * D), wl.unsafe_offset(_at(D, 2)), n, D,
                                                 wl.unsafe_offset(_at(D, 0)), wl.unsafe_offset(_at(D, 1)), memo, r)
        if _lead[gpu]():
            var value = total + wl.unsafe_load(_at(D, 3) + n).cast[F32]()
            if n < D:
                sc.unsafe_store(r * SW + n, value)
            else:
                var c = (n - D) % D
                var at = layer * self_len + ((r // T) * H + c // DH) * CAP * DH + (P + r % T) * DH + c % DH
                (kc if n < 2 * D else vc).unsafe_store(at, value)
    elif stage == SELF_ATTEND or stage == CROSS_MERGE:  # warp (row, head, G channels), terms over the lanes
        var r = i // (H * (DH // G))
        var h = (i // (DH // G)) % H
        var c0 = (i % (DH // G)) * G
        var mixed: SIMD[F32, G]
        comptime if stage == SELF_ATTEND:  # a term per key: each lane its keys' scores
            var t = r % T
            var qv = sc.unsafe_offset(r * SW + h * DH).unsafe_load[width=DH, alignment=ALIGN](0)
            var keys = kc.unsafe_offset(layer * self_len + ((r // T) * H + h) * CAP * DH)  # (row, h, CAP, DH)
            var values = vc.unsafe_offset(layer * self_len + ((r // T) * H + h) * CAP * DH + c0)

            def self_term(j: Int) {var qv, var keys, var values, var mask, var t, var T, var P} -> SIMD[F32, NW]:
                var dot = (qv * keys.unsafe_load[width=DH, alignment=ALIGN](j * DH)).reduce_add()
                var add: Float32 = 0
                if j >= P:  # a new token's key: the causal mask among the new tokens
                    add = mask.unsafe_load(t * T + j - P)
                var term = SIMD[F32, NW](0).insert[offset=0](values.unsafe_load[width=G, alignment=ALIGN](j * DH))
                term[G] = dot * SCALE + add
                term[G + 1] = 1
                return term
            mixed = _softmax_mix[gpu, 2](self_term, P + T)
        else:  # a term per cross-mix chunk: its partial sums
            var q = parts.unsafe_offset(r * SW + h * NC * PART)

            def chunk_term(k: Int) {var q, var c0} -> SIMD[F32, NW]:  # (max, sum of exponentials, G channels' mix)
                var p = q.unsafe_offset(k * PART)
                var term = SIMD[F32, NW](0).insert[offset=0](p.unsafe_load[width=G, alignment=ALIGN](PART_X + c0))
                term[G] = p.unsafe_load(0)
                term[G + 1] = p.unsafe_load(1)
                return term
            mixed = _softmax_mix[gpu, 2](chunk_term, NC)
        if _lead[gpu]():
            sc.unsafe_store[alignment=ALIGN](r * SW + ATT * D + h * DH + c0, mixed)
    elif stage == CROSS_MIX:  # warp (row, head, chunk of KC keys): keys over the lanes for the scores, then
        # channels over the lanes (2l, 2l + 1) for the mix, every key's values one coalesced row
        var r = i // (H * NC)
        var h = (i // NC) % H
        var k = i % NC
        var j0 = k * KC
        var n = min(KC, C - j0)
        var window = (r // T) // (B // A)
        var keys = ck.unsafe_offset(layer * cross_len + (window * H + h) * DH * C + j0)  # (window, h, DH, C)
        var v = cv.unsafe_offset(layer * cross_len + (window * H + h) * C * DH + j0 * DH)  # (window, h, C, DH)
        var qv = sc.unsafe_offset(r * SW + h * DH).unsafe_load[width=DH, alignment=ALIGN](0)
        var q = parts.unsafe_offset(r * SW + (h * NC + k) * PART)

        def chunk_score(l: Int) {var keys, var qv, var n, var C} -> Float32:  # channel c of key j at c * C + j:
            var kv = SIMD[F32, DH](0)  # the lanes' loads of a channel one coalesced row, all DH in flight
            comptime if gpu:
                comptime for c in range(DH):
                    kv[c] = keys.unsafe_load(c * C + min(l, n - 1))
            else:  # the emulation: the same addresses, in one strided load (a third of a long prefill's time)
                kv = strided_load[DH](keys.unsafe_offset(min(l, n - 1)), C)
            return (qv * kv).reduce_add() * SCALE if l < n else -Float32.MAX
        var scores = _lane_values[gpu, 1](chunk_score)
        var m = _reduce[gpu, True](scores)
        var weights = exp(scores - m)  # each key's exponential, by its own lane

        def mix(l: Int) {var weights, var v, var n, var m, var q}:  # every lane gets every key's exponential, so
            # each has the chunk's sum too: the first lane stores it with the max
            var acc = SIMD[F32, 2](0)
            var total: Float32 = 0
            for base in range(0, n, 2 * U):
                var es = SIMD[F32, 2 * U](0)
                var v0 = SIMD[F32, 2 * U](0)  # channel 2l of the keys base .. base + 2U - 1
                var v1 = SIMD[F32, 2 * U](0)  # channel 2l + 1
                comptime for u in range(2 * U):  # the loads first: 2U keys' rows in flight
                    var j = min(base + u, n - 1)
                    es[u] = _from_lane[gpu](weights, j)
                    var pair = v.unsafe_load[width=2, alignment=8](j * DH + 2 * l)
                    v0[u] = pair[0]
                    v1[u] = pair[1]
                comptime for u in range(2 * U):
                    var e = es[u] if base + u < n else Float32(0)
                    acc += e * SIMD[F32, 2](v0[u], v1[u])
                    total += e
            q.unsafe_store[width=2, alignment=8](PART_X + 2 * l, acc)
            if l == 0:
                q.unsafe_store(0, m)
                q.unsafe_store(1, total)
        _each[gpu](mix)
    elif stage == OUT or stage == CROSS_OUT or stage == FC2:
        var r = i // D
        var n = i % D
        var wi = 4 if stage == OUT else (10 if stage == CROSS_OUT else 16)  # the matrix's index in PACKED
        var xr = sc.unsafe_offset(r * SW + (HIDDEN if stage == FC2 else ATT) * D)
        var total = _linear_total[gpu, WT, False](xr, wl.unsafe_offset(_at(D, wi)), n, 4 * D if stage == FC2 else D,
                                                  wl, wl, memo, r)
        if _lead[gpu]():
            var base = y_in if stage == OUT else y
            y.unsafe_store(r * D + n, base.unsafe_load(r * D + n) + (total + wl.unsafe_load(_at(D, wi + 1) + n).cast[F32]()))
    elif stage == CROSS_Q or stage == FC1:
        var width = D if stage == CROSS_Q else 4 * D
        var r = i // width
        var n = i % width
        var wi = 8 if stage == CROSS_Q else 14
        var lni = 6 if stage == CROSS_Q else 12
        var total = _linear_total[gpu, WT, True](y.unsafe_offset(r * D), wl.unsafe_offset(_at(D, wi)), n, D,
                                                 wl.unsafe_offset(_at(D, lni)), wl.unsafe_offset(_at(D, lni + 1)),
                                                 memo, r)
        if _lead[gpu]():
            var value = total + wl.unsafe_load(_at(D, wi + 1) + n).cast[F32]()
            if stage == FC1:
                value = 0.5 * value * (1 + erf(value * Float32(0.7071067811865476)))
                sc.unsafe_store(r * SW + HIDDEN * D + n, value)
            else:
                sc.unsafe_store(r * SW + n, value)
    elif stage == FINAL_LN:
        var xr = ys.unsafe_offset((layer * R + i) * D)  # layer: the last block's
        var mean: Float32
        var rstd: Float32
        mean, rstd = _ln_stats[gpu](xr, D)
        var o = ln.unsafe_offset(i * D)

        def write(l: Int) {var xr, var o, var mean, var rstd, var ln_w, var ln_b, var D}:
            for st in range(l, D // PK, LANES):  # steps of PK values: a lane's loads in one or two rounds (one
                # value at a time, the single warp of this kernel waited for 12 loads in turn: 7.8 us on an H200)
                var k = st * PK
                o.unsafe_store[alignment=ALIGN](k, (xr.unsafe_load[width=PK, alignment=ALIGN](k) - mean) * rstd
                                                * ln_w.unsafe_load[width=PK, alignment=ALIGN](k)
                                                + ln_b.unsafe_load[width=PK, alignment=ALIGN](k))
        _each[gpu](write)
    else:  # LOGITS: item i = pair of panels (2 PANEL vocabulary rows), then logits row q (sequence q // K, its new
        # token rows[q % K]); a half-warp per panel, lane l on row l % PANEL, its steps (l % 16) // PANEL + 4t
        var BK = B * K
        var pair = i // BK
        var q = i % BK
        var panels = (V + PANEL - 1) // PANEL
        var xr = ln.unsafe_offset(((q // K) * T + Int(rows.unsafe_load(q % K))) * D)
        var steps = D // PK

        def part(l: Int) {var xr, var lw, var pair, var panels, var steps, var D} -> Float32:
            # the panel's steps, rows interleaved (step st of row p at (st * PANEL + p) * PK): the half-warp's
            # loads of a round are 16 whole steps of one row each, in order
            var wp = lw.unsafe_offset(min(2 * pair + l // 16, panels - 1) * PANEL * D)
            comptime STRIDE = 16 // PANEL
            var acc = SIMD[F32, PK](0)
            for base in range((l % 16) // PANEL, steps, STRIDE * UL):
                comptime for u in range(UL):
                    var st = base + u * STRIDE
                    var at = min(st, steps - 1)
                    var product = xr.unsafe_load[width=PK, alignment=ALIGN](at * PK) * wp.unsafe_load[
                        width=PK, alignment=ALIGN
                    ]((at * PANEL + l % PANEL) * PK).cast[F32]()
                    acc += product if st < steps else SIMD[F32, PK](0)
            return acc.reduce_add()
        var partial = _lane_values[gpu, 1](part)

        def store(l: Int) {var partial, var logits, var pair, var q, var V}:
            var total = _quad_sum[gpu](partial, l)  # the row's 4 lanes of the half-warp
            var row = (2 * pair + l // 16) * PANEL + l % PANEL
            if l % 16 < PANEL and row < V:
                logits.unsafe_store(q * V + row, total)
        _each[gpu](store)


def _kernel[WT: DType, stage: Int](
    items: Int64, x: FPtr, mask: FPtr, past: LPtr, kc: FPtr, vc: FPtr, ck: FPtr, cv: FPtr, w: WPtr[WT],
    ys: FPtr, sc: FPtr, rows: LPtr, ln_w: FPtr, ln_b: FPtr, lw: WPtr[WT], logits: FPtr, ln: FPtr,
    layer: Int64, A: Int64, B: Int64, T: Int64, CAP: Int64, H: Int64, D: Int64, C: Int64, K: Int64, V: Int64,
    SW: Int64, warm: Int64,
):
    """One warp per work item: item = the warp's index in the grid (whole warps return together). `warm`'s bits
    (`_warm_bits`) ask L2 for what later stages read, a 128-byte line or a few per lane, so that they read it
    from L2, not from memory: the logits' 40 MB stream through a 50 MB L2 every step, so a step's reads start
    cold. WARM_OWN: a block's first stage asks for the block's packed weights and its cross keys and values,
    and the first logits warp of each pair of embedding panels for the pair (the pair's other warps, one per
    logits row, read the same). WARM_NEXT: the first stage asks for the next block's as well. WARM_PANELS: the
    last block's first MLP stage asks for every embedding panel, three stages before the logits read them.

    Launched as a programmatic dependent launch (`run_stage`'s `pdl`), a kernel's blocks start while the
    previous stage still runs: they issue those prefetches, which read nothing an earlier stage writes, then
    wait for the previous stage to finish (`wait_on_dependent_grids`: its writes are then visible), and only
    then let the next stage start (`launch_dependent_grids`), so at most two stages are in flight and every
    read or write of a stage's item follows the whole of the stage before. Without that launch attribute both
    calls return at once."""
    var i = Int(global_idx.x) // LANES
    if i >= Int(items):
        return
    var bits = Int(warm)
    if bits != 0:
        var lane = Int(global_idx.x)
        var lanes = Int(items) * LANES
        comptime if stage == QKV:
            var cross_len = Int(A) * Int(H) * DH * Int(C)
            var keep = (bits & WARM_KEEP) != 0
            for ahead in range(2):
                if bits & (WARM_NEXT if ahead else WARM_OWN):
                    var at = Int(layer) + ahead
                    _warm_l2(w.unsafe_offset(at * _packed_len(Int(D))), _packed_len(Int(D)), lane, lanes, keep)
                    _warm_l2(ck.unsafe_offset(at * cross_len), cross_len, lane, lanes, keep)
                    _warm_l2(cv.unsafe_offset(at * cross_len), cross_len, lane, lanes, keep)
        comptime if stage == FC1:
            if bits & WARM_PANELS:
                _warm_l2(lw, (Int(V) + PANEL - 1) // PANEL * PANEL * Int(D), lane, lanes)
        comptime if stage == LOGITS:
            var panels = (Int(V) + PANEL - 1) // PANEL
            var pair = i // (Int(B) * Int(K))
            if i % (Int(B) * Int(K)) == 0:  # the pair's first warp: the rest read the same panels
                var first = 2 * pair * PANEL * Int(D)
                _warm_l2(lw.unsafe_offset(first), min(2, panels - 2 * pair) * PANEL * Int(D), Int(lane_id()), LANES)
    wait_on_dependent_grids()
    launch_dependent_grids()
    _item[True, WT, stage](i, x, mask, past, kc, vc, ck, cv, w, ys, sc, rows, ln_w, ln_b, lw, logits, ln,
                           Int(layer), Int(A), Int(B), Int(T), Int(CAP), Int(H), Int(D), Int(C), Int(K), Int(V),
                           Int(SW), sc)  # sc for the emulation's memo, which the GPU's items never read


@always_inline
def _warm_l2[T: DType](base: Pointer[Scalar[T], MutAnyOrigin], count: Int, lane: Int, lanes: Int, keep: Bool = False):
    """Prefetch into L2 the 128-byte lines lane, lane + lanes, ... of the `count` values at base; `keep`: at
    evict-last priority (`prefetch.global.L2::evict_last`, sm_80 and later), so that they outlast the lines read
    at normal priority, the logits' panels among them."""
    comptime LINE = 128 // size_of[T]()
    for k in range(lane, (count + LINE - 1) // LINE, lanes):
        if keep:
            inlined_assembly["prefetch.global.L2::evict_last [$0];", NoneType, constraints="l",
                             has_side_effect=True](base.unsafe_offset(k * LINE))
        else:
            prefetch[PrefetchOptions().for_read().high_locality()](base.unsafe_offset(k * LINE))


comptime WARM_OWN = 1
comptime WARM_NEXT = 2
comptime WARM_PANELS = 4
comptime WARM_KEEP = 8


@always_inline
def _warm_bits(stage: Int, layer: Int, L: Int, prefetch: Int) -> Int:
    """What a stage's launch asks L2 for (`_kernel`): MAXWHISPER_WARPS_PREFETCH=1, each block's first stage its
    block's weights and cross keys and values, the logits their panels; 2, the same a block ahead (block 0's
    first stage asks for blocks 0 and 1, block l's for l + 1), and every panel from the last block's MLP on; 3,
    as 1 with the blocks' data at evict-last priority (WARM_KEEP): the 35 MB of every block's weights and cross
    keys and values (tiny.en) may then stay in the 50 MB L2 from step to step while the logits' 40 MB of panels
    stream through the rest."""
    if prefetch == 0:
        return 0
    if stage == QKV:
        var own = WARM_OWN if prefetch != 2 or layer == 0 else 0
        var keep = WARM_KEEP if prefetch == 3 else 0
        return own | keep | (WARM_NEXT if prefetch == 2 and layer + 1 < L else 0)
    if stage == FC1:
        return WARM_PANELS if prefetch == 2 and layer == L - 1 else 0
    return WARM_OWN if stage == LOGITS else 0


@always_inline
def _items(stage: Int, R: Int, B: Int, H: Int, D: Int, C: Int, K: Int, V: Int) -> Int:
    """Work items (warps) of a stage."""
    if stage == QKV:
        return R * 3 * D
    if stage == SELF_ATTEND or stage == CROSS_MERGE:
        return R * H * (DH // G)
    if stage == CROSS_MIX:
        return R * H * _chunks(C)
    if stage == FC1:
        return R * 4 * D
    if stage == FINAL_LN:
        return R
    if stage == LOGITS:
        return ((V + PANEL - 1) // PANEL + 1) // 2 * B * K
    return R * D  # OUT, CROSS_Q, CROSS_OUT, FC2


def run_stage[gpu: Bool, WT: DType, stage: Int](
    ctx: DeviceContext, x: FPtr, mask: FPtr, past: LPtr, kc: FPtr, vc: FPtr, ck: FPtr, cv: FPtr, w: WPtr[WT],
    ys: FPtr, sc: FPtr, rows: LPtr, ln_w: FPtr, ln_b: FPtr, lw: WPtr[WT], logits: FPtr, ln: FPtr,
    layer: Int, A: Int, B: Int, T: Int, CAP: Int, H: Int, D: Int, C: Int, K: Int, V: Int, SW: Int, block: Int,
    warm: Int, pdl: Bool,
) raises:
    """Every work item of one stage: a kernel launch on the GPU (`block` threads a block but for the logits;
    with `pdl` a programmatic dependent launch, see `_kernel`), a loop over the items in the emulation."""
    var items = _items(stage, B * T, B, H, D, C, K, V)
    comptime if gpu:
        var threads = LOGITS_THREADS if stage == LOGITS else block
        ctx.enqueue_function[_kernel[WT, stage]](
            Int64(items), x, mask, past, kc, vc, ck, cv, w, ys, sc, rows, ln_w, ln_b, lw, logits, ln,
            Int64(layer), Int64(A), Int64(B), Int64(T), Int64(CAP), Int64(H), Int64(D), Int64(C), Int64(K),
            Int64(V), Int64(SW), Int64(warm),
            grid_dim=(items * LANES + threads - 1) // threads, block_dim=threads,
            attributes=pdl_launch_attributes(PDLLevel.OVERLAP_AT_END if pdl else PDLLevel.OFF),
        )
    else:  # the items split in contiguous shares over the CPU's cores (at most 4)
        var workers = min(num_physical_cores(), 4)
        var share = (items + workers - 1) // workers

        def work(wid: Int) {var x, var mask, var past, var kc, var vc, var ck, var cv, var w, var ys, var sc, var rows,
                            var ln_w, var ln_b, var lw, var logits, var ln, var layer, var A, var B, var T, var CAP,
                            var H, var D, var C, var K, var V, var SW, var items, var share}:
            var memo = rebind[FPtr](stack_allocation[3, Float32]())
            memo.unsafe_store(0, -1)  # no row's statistics yet
            for i in range(wid * share, min(items, wid * share + share)):
                _item[False, WT, stage](i, x, mask, past, kc, vc, ck, cv, w, ys, sc, rows, ln_w, ln_b, lw, logits,
                                        ln, layer, A, B, T, CAP, H, D, C, K, V, SW, memo)
        parallelize(work, workers)


def decoder_warps[gpu: Bool, WT: DType](
    ctx: DeviceContext, x: FPtr, mask: FPtr, past: LPtr, kc: FPtr, vc: FPtr, ck: FPtr, cv: FPtr, w: WPtr[WT],
    ys: FPtr, sc: FPtr, rows: LPtr, ln_w: FPtr, ln_b: FPtr, lw: WPtr[WT], logits: FPtr, ln: FPtr,
    L: Int, A: Int, B: Int, T: Int, CAP: Int, H: Int, D: Int, C: Int, K: Int, V: Int, SW: Int,
    block: Int = BLOCK_THREADS, prefetch: Int = 1, pdl: Bool = True,
) raises:
    """Every block's stages in turn, then the final LayerNorm and the logits (see the module docstring);
    `prefetch`: MAXWHISPER_WARPS_PREFETCH's 0, 1, 2 or 3 (`_warm_bits`)."""
    comptime assert DH == 2 * LANES, "the cross mix gives each lane two channels"
    comptime assert 16 % PANEL == 0 and DH % G == 0 and G + 2 < NW, "the logits' half-warps, the softmax's terms"
    for l in range(L):
        comptime for stage in range(FINAL_LN):
            run_stage[gpu, WT, stage](ctx, x, mask, past, kc, vc, ck, cv, w, ys, sc, rows, ln_w, ln_b, lw, logits,
                                      ln, l, A, B, T, CAP, H, D, C, K, V, SW, block,
                                      _warm_bits(stage, l, L, prefetch), pdl)
    run_stage[gpu, WT, FINAL_LN](ctx, x, mask, past, kc, vc, ck, cv, w, ys, sc, rows, ln_w, ln_b, lw, logits, ln,
                                 L - 1, A, B, T, CAP, H, D, C, K, V, SW, block,
                                 _warm_bits(FINAL_LN, L - 1, L, prefetch), pdl)
    run_stage[gpu, WT, LOGITS](ctx, x, mask, past, kc, vc, ck, cv, w, ys, sc, rows, ln_w, ln_b, lw, logits, ln,
                               L - 1, A, B, T, CAP, H, D, C, K, V, SW, block,
                               _warm_bits(LOGITS, L - 1, L, prefetch), pdl)


@extensibility.register("decoder_warps")
struct DecoderWarps:
    @staticmethod
    def execute[target: StaticString, wdt: DType](
        ys: OutputTensor[dtype=DType.float32, rank=2, ...],
        scratch: OutputTensor[dtype=DType.float32, rank=2, ...],
        logits: OutputTensor[dtype=DType.float32, rank=2, ...],
        ln: OutputTensor[dtype=DType.float32, rank=2, ...],
        x: InputTensor[dtype=DType.float32, rank=2, ...],
        mask: InputTensor[dtype=DType.float32, rank=2, ...],
        past: InputTensor[dtype=DType.int64, rank=1, ...],
        k_cache: MutableInputTensor[dtype=DType.float32, rank=4, ...],
        v_cache: MutableInputTensor[dtype=DType.float32, rank=4, ...],
        cross_k: InputTensor[dtype=DType.float32, rank=4, ...],
        cross_v: InputTensor[dtype=DType.float32, rank=4, ...],
        weights: InputTensor[dtype=wdt, rank=1, ...],
        rows: InputTensor[dtype=DType.int64, rank=1, ...],
        ln_w: InputTensor[dtype=DType.float32, rank=1, ...],
        ln_b: InputTensor[dtype=DType.float32, rank=1, ...],
        logits_w: InputTensor[dtype=wdt, rank=1, ...],
        ctx: DeviceContext,
    ) raises:
        comptime if wdt != DType.float32 and wdt != DType.float16:
            raise Error("decoder_warps: the packed weights must be float32 or float16")
        # shapes only: the cache count and the logits rows live on the device and are read there
        var R = x.dim_size(0)
        var D = x.dim_size(1)
        var L = weights.dim_size(0) // _packed_len(D)
        if L < 1 or L > MAX_LAYERS or weights.dim_size(0) != L * _packed_len(D) or D % PK != 0:
            raise Error("decoder_warps: the packed weights are not 1 to 32 blocks of this width")
        if k_cache.dim_size(0) % L != 0 or cross_k.dim_size(0) % L != 0 or ys.dim_size(0) != L * R:
            raise Error("decoder_warps: the caches, cross keys/values and outputs must hold every block's")
        var B = k_cache.dim_size(0) // L
        var H = k_cache.dim_size(1)
        var CAP = k_cache.dim_size(2)
        var T = mask.dim_size(0)
        var C = cross_k.dim_size(3)
        var A = cross_k.dim_size(0) // L
        var K = rows.dim_size(0)
        var V = logits.dim_size(1)
        var SW = scratch.dim_size(1)
        if A < 1 or B % A != 0:
            raise Error("decoder_warps: the rows must be whole groups of the audio windows' count")
        if B * T != R or H * DH != D or k_cache.dim_size(3) != DH or mask.dim_size(1) != T:
            raise Error("decoder_warps: x, mask and the cache disagree on batch, tokens or width")
        if CAP > MAX_SELF or C > MAX_CROSS:
            raise Error("decoder_warps: the cache holds at most 448 tokens, the audio window 1504 frames")
        if SW != scratch_width(D, H, C):
            raise Error("decoder_warps: the scratch width is not maxwhisper.fused.warps_scratch_width's")
        if K < 1 or K > T or logits.dim_size(0) != B * K or ln.dim_size(0) != R or ln.dim_size(1) != D:
            raise Error("decoder_warps: the logits must be (batch * rows, vocabulary), the LayerNorm (rows, width)")
        if logits_w.dim_size(0) != (V + PANEL - 1) // PANEL * PANEL * D or ln_w.dim_size(0) != D:
            raise Error("decoder_warps: the logits' weights are not the vocabulary's panels of this width")
        var block = BLOCK_THREADS
        var setting = getenv("MAXWHISPER_WARPS_BLOCK", "")
        if setting != "":
            try:
                block = Int(setting)
            except:
                block = 0
            if block < LANES or block > 1024 or block % LANES != 0:
                raise Error("decoder_warps: MAXWHISPER_WARPS_BLOCK=" + setting + " is not threads per block (a "
                            + "multiple of 32 from 32 to 1024); unset it for the default of 64")
        # maxwhisper.fused.warps_settings checks all three first; a setting changed since is refused here too
        var ahead = getenv("MAXWHISPER_WARPS_PREFETCH", "")
        if ahead != "" and ahead != "0" and ahead != "1" and ahead != "2" and ahead != "3":
            raise Error("decoder_warps: MAXWHISPER_WARPS_PREFETCH=" + ahead + " must be 1, 2, 3 or 0; unset it for 1")
        var prefetch = 0 if ahead == "0" else (2 if ahead == "2" else (3 if ahead == "3" else 1))
        var dependent = getenv("MAXWHISPER_WARPS_PDL", "")
        if dependent != "" and dependent != "0" and dependent != "1":
            raise Error("decoder_warps: MAXWHISPER_WARPS_PDL=" + dependent + " must be 1 or 0; unset it for 1")
        var pdl = dependent != "0"
        decoder_warps[target != "cpu", wdt](
            ctx, x.unsafe_ptr(), mask.unsafe_ptr(), past.unsafe_ptr(), k_cache.unsafe_ptr(), v_cache.unsafe_ptr(),
            cross_k.unsafe_ptr(), cross_v.unsafe_ptr(), weights.unsafe_ptr(), ys.unsafe_ptr(), scratch.unsafe_ptr(),
            rows.unsafe_ptr(), ln_w.unsafe_ptr(), ln_b.unsafe_ptr(), logits_w.unsafe_ptr(), logits.unsafe_ptr(),
            ln.unsafe_ptr(), L, A, B, T, CAP, H, D, C, K, V, SW, block, prefetch, pdl,
        )
