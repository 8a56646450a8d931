"""Custom op decoder_block: a whole Whisper decoder step after the embeddings, float32, on CPU: every block
in turn for the new tokens of each row, the final LayerNorm, and the logits of the rows asked for.

    x (R, D), R = B * T rows (row r is token t = r % T of sequence b = r // T)
    block l: y_l = y + self_attn(ln(y)) -> + cross_attn(ln(.)) -> + mlp(ln(.)), y = x (l = 0) or y_(l-1)
    out: every block's y_l, stacked (L * R, D); ln(y_(L-1)) (R, D); logits (B * K, V) of its K rows `rows`
    (among each sequence's T) against the tied embedding in gemv_nt's panels, summed as gemv_nt sums
    Each layer's self-attention caches of keys and of values, (B, H, capacity, 64) each and stacked over the
    layers (L * B, ...), hold P tokens; the op writes the new tokens' keys and values in place, at positions
    P .. P + T - 1, and attends over the first P + T. The B rows are groups of B / A rows (a beam or best-of
    group) per audio window; cross keys and values come once per window, stacked over the layers too.

One op for the blocks replaces about 25 graph kernels per block: a decoder step is memory-bound and small,
so the per-kernel dispatch of a graph of small ops costs more than the arithmetic. The op opens one
parallel region for all its blocks: their phases (LayerNorm, q/k/v, self-attention, ...) run in order, and
within a phase the workers take its items (chunks of a weight matrix's rows, (row, head) attention items)
from a shared counter (`_share`). Waking the workers once per phase cost more than the second core gave
back: measured, the blocks' matrix products ran as fast on one thread as on two. One region for all four
blocks of tiny.en instead of one per block: a step (the blocks and the logits product) took 3.90-3.92 ms
against 4.22-4.36 ms, the same logits bit for bit; the LayerNorm and the logits product in the same
region too: 3.77-3.93 ms against 4.12-4.23 ms (each pair in one process, interleaved, AMD EPYC AVX2).
Every weight is streamed once per call. Each block's weights arrive as one vector (the L vectors in a row),
in the order `PACKED` (maxwhisper/fused.py) lists, each matrix (out, in) as PyTorch's Linear keeps it, packed in gemv_nt's panels; float32 or float16 (widened to
float32 as loaded: the float32 arithmetic, on half the bytes, for half-representable weights):
    attn_ln.w, attn_ln.b, qkv.w (3D, D), qkv.b, out.w (D, D), out.b, cross_ln.w, cross_ln.b,
    cross_q.w (D, D), cross_q.b, cross_out.w (D, D), cross_out.b, mlp_ln.w, mlp_ln.b,
    fc1.w (4D, D), fc1.b, fc2.w (D, 4D), fc2.b
"""

import extensibility
from extensibility import InputTensor, OutputTensor
from extensibility import _MutableInputTensor as MutableInputTensor
from max.gpu.host import DeviceContext
from max.algorithm import parallelize
from std.atomic import Atomic
from std.math import exp, erf, sqrt
from std.memory import stack_allocation
from std.sys import num_physical_cores, simd_width_of, size_of

from .gemv_nt import PANEL, WPtr, gemv_range, padded_k

comptime F32 = DType.float32
comptime VW = simd_width_of[F32]()
comptime Vec = SIMD[F32, VW]
comptime FPtr = Pointer[Float32, MutAnyOrigin]
comptime IPtr = Pointer[Int64, MutUntrackedOrigin]
comptime DH = 64  # head width of every Whisper size
comptime MAX_SELF = 448  # n_text_ctx of every Whisper size
comptime MAX_CROSS = 1504  # n_audio_ctx (1500), rounded up to whole vectors
comptime LN_EPS = 1e-5
comptime CROSS_ROWS = 8  # rows of one audio window per pass over its cross-attention keys and values
# Up to this many rows of a window (a step of a small group), K and V stream once from memory, row by row;
# more rows, and every count where vectors hold 16 floats (AVX-512: 32 registers), go in register tiles.
# Measured on AMD EPYC Zen 5, three alternating runs of 350 steps: tiles at batch 5 2.46 / 2.50 / 2.54 ms
# against 2.80 / 2.62 / 2.87 ms streamed, batch 1 1.53-1.56 against 1.57-1.67 ms; the same bits. The AVX2
# build run on AMD EPYC Zen 4 (one block's cross-attention, one thread, 8 alternating runs, medians): 4 and 5
# rows within the noise either way (streamed 684 and 720 us, tiled 651 and 621-724 us), 1 row 227-237 us
# streamed against 399-409 us tiled.
comptime STREAM_ROWS = 0 if VW >= 16 else 5
comptime TILE_VECS = 3  # vectors of columns per register tile of the scores (4 rows x 3 + 3 + 1 registers)
# Rows per register tile of the scores (TILE_ROWS x TILE_VECS sums: 12 of AVX2's 16 registers, 24 of AVX-512's
# 32; encoder_attention tiles its scores the same way) and of the output (2 rows x half a head with AVX2, 8 rows
# with AVX-512)
comptime TILE_ROWS = 8 if VW >= 16 else 4
comptime MIX_TILE_ROWS = 8 if VW >= 16 else 2
# Rows of K (DH, C) a pass of the score tiles sums before it stores the sums and starts the next rows. A tile
# reads a slice of every row it sums, so a pass of all 64 rows is 64 concurrent streams, too many for the
# hardware prefetcher; 8 rows a pass, and (AVX-512) a tile of output rows that fit in registers mixes whole
# 64-wide rows of V in one pass (`_mix_tiled` PARTS 1), not in two half-width ones.
# Measured on AMD EPYC Zen 4 (AVX-512), medians of 500 steps, cache 100, the same logits bit for bit: a
# step's cross-attention, all 4 blocks, 1035-1057 us against 635-665 us at batch 1 (the step 2.81-2.87
# against 3.35-3.58 ms) and 1501-1525 against 734-742 us at batch 5 (3.69-3.76 against 4.57-4.60 ms);
# streaming K and V row by row took 552-657 us at batch 1 and 1248-1313 us at batch 5; 4 or 16 rows a pass,
# 667 and 635 us at batch 1, 825 and 818 us at batch 5. The AVX2 build on the same CPU (one block, one
# thread, 3 alternating runs; 64 rows a pass before): 6 rows 542-587 against 1025-1365 us, 8 rows 617-669
# against 1123-1467 us, a 100-token prompt 4062-4176 (one disturbed run 5772) against 5081-6578 us.
comptime KEY_ROWS = 8
comptime WHOLE_ROW_SUMS = 24  # registers of sums a whole-width mix tile may take (of AVX-512's 32)
comptime CHUNK_BYTES = 48 * 1024  # weights per work item of a matrix product
# The phases of one block, in order: LayerNorm, q/k/v, self-attention, out, LayerNorm, cross q,
# cross-attention, cross out, LayerNorm, fc1, fc2.
comptime PHASES = 11
comptime MAX_WORKERS = 4
comptime MAX_LAYERS = 32  # decoder blocks of the largest Whisper
comptime LOGIT_PANELS = 64  # panels of the vocabulary per work item of the logits product (192 KB in half)


@always_inline
def _packed_len(D: Int) -> Int:
    """Values in one block's packed weights (`PACKED`; fused.packed_size in Python)."""
    return 14 * D * D + 17 * D


@always_inline
def _layer_norm[WT: DType](xp: FPtr, wp: WPtr[WT], bp: WPtr[WT], op: FPtr, r: Int, D: Int):
    """Row r of op (R, D) = LayerNorm of row r of xp (statistics in float64)."""
    var x = xp.unsafe_offset(r * D)
    var o = op.unsafe_offset(r * D)
    var total: Float64 = 0
    for j in range(D):
        total += Float64(x.unsafe_load(j))
    var mean = total / Float64(D)
    var sq: Float64 = 0
    for j in range(D):
        var c = Float64(x.unsafe_load(j)) - mean
        sq += c * c
    var inv = Float32(1.0 / sqrt(sq / Float64(D) + LN_EPS))
    var m = Float32(mean)
    for j in range(D):
        o.unsafe_store(
            j, (x.unsafe_load(j) - m) * inv * wp.unsafe_load(j).cast[F32]() + bp.unsafe_load(j).cast[F32]()
        )


@always_inline
def _share[F: def(Int) -> None](body: F, ctr: IPtr, phase: Int, n: Int):
    """Run body(0) .. body(n - 1) together with the other workers; return once all n are done.
    Each worker claims the next unclaimed item, so a worker that starts late, or runs alone, only finds
    less to do: no item ever waits for a worker that has not started."""
    var claim = ctr.unsafe_offset(2 * phase)
    var done = ctr.unsafe_offset(2 * phase + 1)
    while True:
        var i = Int(Atomic[Int64].fetch_add(claim, 1))
        if i >= n:
            break
        body(i)
        _ = Atomic[Int64].fetch_add(done, 1)
    while Int(Atomic[Int64].load(done)) < n:
        pass


@always_inline
def _on_workers[F: def(Int) -> None](worker: F):
    """worker(0), worker(1), ... on up to MAX_WORKERS of the CPU's cores at once (one parallel region), each
    taking its share of every phase through `_share`; on one core, worker(0) does it all."""
    var workers = min(num_physical_cores(), MAX_WORKERS)
    if workers <= 1:
        worker(0)
    else:
        parallelize(worker, workers)


@always_inline
def _chunk_rows[WT: DType](K: Int) -> Int:
    """Rows of W per work item of a matrix product: about CHUNK_BYTES of weights, whole vectors of outputs."""
    return max(VW, (CHUNK_BYTES // (K * size_of[WT]())) // VW * VW)


@always_inline
def _linear_chunk[WT: DType, GELU: Bool, ACC: Bool](
    xp: FPtr, wp: WPtr[WT], bp: WPtr[WT], op: FPtr, acc: FPtr, R: Int, N: Int, K: Int, item: Int
):
    """Columns of work item `item` of op (R, N) = xp (R, K) @ wp (N, K)^T + bp, then the exact (erf) GELU
    (GELU), then added into acc (R, N) (ACC)."""
    var rows = _chunk_rows[WT](K)
    var n0 = item * rows
    var n1 = min(N, n0 + rows)
    gemv_range[WT](xp, wp, op, R, N, K, n0, n1)
    for r in range(R):
        var o = op.unsafe_offset(r * N)
        var a = acc.unsafe_offset(r * N)
        var j = n0
        while j + VW <= n1:
            _epilogue[VW, WT, GELU, ACC](o, a, bp, j)
            j += VW
        while j < n1:
            _epilogue[1, WT, GELU, ACC](o, a, bp, j)
            j += 1


@always_inline
def _epilogue[W: Int, WT: DType, GELU: Bool, ACC: Bool](o: FPtr, a: FPtr, bp: WPtr[WT], j: Int):
    """o[j:j+W] += bp[j:j+W], then the exact (erf) GELU (GELU), then added into a[j:j+W] (ACC)."""
    var v = o.unsafe_load[width=W](j) + bp.unsafe_load[width=W](j).cast[F32]()
    comptime if GELU:
        v = 0.5 * v * (1 + erf(v * Float32(0.7071067811865476)))
    o.unsafe_store(j, v)
    comptime if ACC:
        a.unsafe_store(j, a.unsafe_load[width=W](j) + v)


@always_inline
def _chunks[WT: DType](N: Int, K: Int) -> Int:
    var rows = _chunk_rows[WT](K)
    return (N + rows - 1) // rows


@always_inline
def _softmax[origin: MutOrigin](row: Pointer[Float32, origin], n: Int):
    """row[0:n] = softmax(row[0:n]), in place, whole vectors at a time."""
    var nv = n - n % VW
    var top_v = Vec(Float32.MIN)
    for c in range(0, nv, VW):
        top_v = max(top_v, row.unsafe_load[width=VW](c))
    var top = top_v.reduce_max()
    for c in range(nv, n):
        top = max(top, row.unsafe_load(c))
    var total_v = Vec(0)
    for c in range(0, nv, VW):
        var e = exp(row.unsafe_load[width=VW](c) - top)
        row.unsafe_store(c, e)
        total_v += e
    var total = total_v.reduce_add()
    for c in range(nv, n):
        var e = exp(row.unsafe_load(c) - top)
        row.unsafe_store(c, e)
        total += e
    var inv = 1 / total
    for c in range(0, nv, VW):
        row.unsafe_store(c, row.unsafe_load[width=VW](c) * inv)
    for c in range(nv, n):
        row.unsafe_store(c, row.unsafe_load(c) * inv)


@always_inline
def _dot64(a: FPtr, b: FPtr) -> Float32:
    var acc = Vec(0)
    comptime for c in range(DH // VW):
        acc = a.unsafe_load[width=VW](c * VW).fma(b.unsafe_load[width=VW](c * VW), acc)
    return acc.reduce_add()


@always_inline
def _append_head(qkv: FPtr, kc: FPtr, vc: FPtr, b: Int, hh: Int, T: Int, P: Int, H: Int, D: Int, CAP: Int):
    """The new tokens' keys and values (from qkv) written into head hh of row b of the caches kc, vc
    (B, H, CAP, DH), at positions P .. P + T - 1."""
    var bh = b * H + hh
    comptime for which in range(1, 3):  # 1: keys, 2: values (their place in qkv)
        var dst = (kc if which == 1 else vc).unsafe_offset(bh * CAP * DH)
        for t in range(T):
            var new = qkv.unsafe_offset((b * T + t) * 3 * D + which * D + hh * DH)
            var row = dst.unsafe_offset((P + t) * DH)
            comptime for c in range(DH // VW):
                row.unsafe_store(c * VW, new.unsafe_load[width=VW](c * VW))


@always_inline
def _attend_self(qkv: FPtr, kc: FPtr, vc: FPtr, mask: FPtr, dst: FPtr, b: Int, t: Int, hh: Int, T: Int, P: Int,
                 H: Int, D: Int, CAP: Int):
    """dst row b * T + t, head hh: attention over the P + T cached keys of (b, hh) (all P past ones visible,
    the new ones through mask (T, T)); qkv (R, 3D) holds the queries; kc, vc (B, H, CAP, DH) the cache."""
    var S = P + T
    var r = b * T + t
    var scale = Float32(1.0 / sqrt(Float64(DH)))
    var q = qkv.unsafe_offset(r * 3 * D + hh * DH)
    var kb = kc.unsafe_offset((b * H + hh) * CAP * DH)
    var vb = vc.unsafe_offset((b * H + hh) * CAP * DH)
    var scores = Array[Float32, MAX_SELF](fill=0)
    for j in range(S):
        var s = _dot64(q, kb.unsafe_offset(j * DH)) * scale
        if j >= P:
            s += mask.unsafe_load(t * T + j - P)
        scores[j] = s
    _softmax(scores.unsafe_ptr(), S)
    var acc = Array[Vec, DH // VW](fill=Vec(0))
    for j in range(S):
        var p = Vec(scores[j])
        var vrow = vb.unsafe_offset(j * DH)
        comptime for c in range(DH // VW):
            acc[c] = vrow.unsafe_load[width=VW](c * VW).fma(p, acc[c])
    var o = dst.unsafe_offset(r * D + hh * DH)
    comptime for c in range(DH // VW):
        o.unsafe_store(c * VW, acc[c])


@always_inline
def _attend_cross(q: FPtr, ck: FPtr, cv: FPtr, dst: FPtr, item: Int, G: Int, T: Int, H: Int, D: Int, C: Int):
    """Work item `item` of cross-attention: up to CROSS_ROWS rows of one audio window, one head. Each row
    attends over its window's keys ck (A, H, DH, C) and values cv (A, H, C, DH); the G * T rows of window a
    are rows a * G * T onwards, so a beam or best-of group reads its window once, not once per row."""
    var scale = Float32(1.0 / sqrt(Float64(DH)))
    var per_window = G * T
    var chunks = (per_window + CROSS_ROWS - 1) // CROSS_ROWS
    var a = item // (H * chunks)
    var hh = (item // chunks) % H
    var r0 = a * per_window + (item % chunks) * CROSS_ROWS
    var n = min(CROSS_ROWS, (a + 1) * per_window - r0)
    var kb = ck.unsafe_offset((a * H + hh) * DH * C)
    var vb = cv.unsafe_offset((a * H + hh) * C * DH)
    var qb = q.unsafe_offset(r0 * D + hh * DH)
    var buf = Array[Float32, CROSS_ROWS * MAX_CROSS](fill=0)
    var sp = buf.unsafe_ptr()
    if n <= STREAM_ROWS:  # a step on AVX2: K streams from memory once, row by row, for the n rows
        _scores_streamed(qb, kb, sp, n, D, C, scale)
    else:  # a prompt: K is reused by many rows, so the rows' sums stay in registers, a tile at a time
        var i = 0
        while i + TILE_ROWS <= n:
            _scores_tiled[TILE_ROWS](qb, kb, sp, i, D, C, scale)
            i += TILE_ROWS
        comptime for rt in range(1, TILE_ROWS):
            if n - i == rt:
                _scores_tiled[rt](qb, kb, sp, i, D, C, scale)
    for i in range(n):
        _softmax(sp.unsafe_offset(i * MAX_CROSS), C)
    if n <= STREAM_ROWS:
        _mix_streamed(vb, sp, dst.unsafe_offset(r0 * D + hh * DH), n, D, C)
    else:
        var i = 0
        while i + MIX_TILE_ROWS <= n:
            comptime for half in range(2):
                _mix_tiled[MIX_TILE_ROWS, half, 2](vb, sp, dst.unsafe_offset(r0 * D + hh * DH), i, D, C)
            i += MIX_TILE_ROWS
        comptime for rt in range(1, MIX_TILE_ROWS):
            if n - i == rt:
                comptime if VW >= 16 and rt * (DH // VW) <= WHOLE_ROW_SUMS:  # V streams once
                    _mix_tiled[rt, 0, 1](vb, sp, dst.unsafe_offset(r0 * D + hh * DH), i, D, C)
                else:
                    comptime for half in range(2):
                        _mix_tiled[rt, half, 2](vb, sp, dst.unsafe_offset(r0 * D + hh * DH), i, D, C)


@always_inline
def _scores_streamed[origin: MutOrigin](
    qb: FPtr, kb: FPtr, sp: Pointer[Float32, origin], n: Int, D: Int, C: Int, scale: Float32, c0: Int = 0
):
    """sp[i, c0:C] = scale * q_i . K for rows i < n (c0 a whole vector): K's rows (DH, C) read once, in
    order, for all n rows."""
    var c_vec = C - C % VW
    for j in range(DH):
        var krow = kb.unsafe_offset(j * C)
        var qs = Array[Float32, CROSS_ROWS](fill=0)
        for i in range(n):
            qs[i] = qb.unsafe_load(i * D + j) * scale
        var c = c0
        while c < c_vec:
            var kv = krow.unsafe_load[width=VW](c)
            for i in range(n):
                var at = i * MAX_CROSS + c
                sp.unsafe_store(at, kv.fma(Vec(qs[i]), sp.unsafe_load[width=VW](at)))
            c += VW
        while c < C:
            for i in range(n):
                var at = i * MAX_CROSS + c
                sp.unsafe_store(at, krow.unsafe_load(c) * qs[i] + sp.unsafe_load(at))
            c += 1


@always_inline
def _scores_tiled[origin: MutOrigin, //, RT: Int](qb: FPtr, kb: FPtr, sp: Pointer[Float32, origin], i0: Int, D: Int, C: Int, scale: Float32):
    """sp[i0:i0+RT, :C] = scale * q . K, for RT rows and TILE_VECS vectors of columns at a time, summed over
    KEY_ROWS rows of K at a time in registers, then stored and picked up again for the next rows (the same
    order and products as _scores_streamed: the same bits)."""
    comptime CW = TILE_VECS * VW
    var c_end = C - C % CW
    for j0 in range(0, DH, KEY_ROWS):
        var c = 0
        while c < c_end:
            var acc = Array[Vec, RT * TILE_VECS](fill=Vec(0))
            if j0 > 0:
                comptime for i in range(RT):
                    comptime for v in range(TILE_VECS):
                        acc[i * TILE_VECS + v] = sp.unsafe_load[width=VW]((i0 + i) * MAX_CROSS + c + v * VW)
            for j in range(j0, j0 + KEY_ROWS):
                var krow = kb.unsafe_offset(j * C + c)
                comptime for i in range(RT):
                    var qv = Vec(qb.unsafe_load((i0 + i) * D + j) * scale)
                    comptime for v in range(TILE_VECS):
                        acc[i * TILE_VECS + v] = krow.unsafe_load[width=VW](v * VW).fma(qv, acc[i * TILE_VECS + v])
            comptime for i in range(RT):
                comptime for v in range(TILE_VECS):
                    sp.unsafe_store((i0 + i) * MAX_CROSS + c + v * VW, acc[i * TILE_VECS + v])
            c += CW
    _scores_streamed(qb.unsafe_offset(i0 * D), kb, sp.unsafe_offset(i0 * MAX_CROSS), RT, D, C, scale, c_end)  # the rest


@always_inline
def _mix_streamed[origin: MutOrigin](vb: FPtr, sp: Pointer[Float32, origin], ob: FPtr, n: Int, D: Int, C: Int):
    """ob row i (stride D) = sum_c p[i, c] V[c, :] for rows i < n: V's rows read once, in order."""
    var acc = Array[Vec, CROSS_ROWS * (DH // VW)](fill=Vec(0))
    for c in range(C):
        var vrow = vb.unsafe_offset(c * DH)
        var vv = Array[Vec, DH // VW](fill=Vec(0))
        comptime for k in range(DH // VW):
            vv[k] = vrow.unsafe_load[width=VW](k * VW)
        for i in range(n):
            var p = Vec(sp.unsafe_load(i * MAX_CROSS + c))
            comptime for k in range(DH // VW):
                acc[i * (DH // VW) + k] = vv[k].fma(p, acc[i * (DH // VW) + k])
    for i in range(n):
        var o = ob.unsafe_offset(i * D)
        comptime for k in range(DH // VW):
            o.unsafe_store(k * VW, acc[i * (DH // VW) + k])


@always_inline
def _mix_tiled[origin: MutOrigin, //, RT: Int, PART: Int, PARTS: Int](vb: FPtr, sp: Pointer[Float32, origin], ob: FPtr, i0: Int, D: Int, C: Int):
    """Part PART of PARTS (1 or 2) of the head's width of ob rows i0 .. i0 + RT - 1 (stride D) = sum_c p[i, c]
    V[c, :], summed in registers over c in order (the same bits as _mix_streamed)."""
    comptime HV = DH // VW // PARTS
    var acc = Array[Vec, RT * HV](fill=Vec(0))
    for c in range(C):
        var vrow = vb.unsafe_offset(c * DH + PART * HV * VW)
        comptime for i in range(RT):
            var p = Vec(sp.unsafe_load((i0 + i) * MAX_CROSS + c))
            comptime for k in range(HV):
                acc[i * HV + k] = vrow.unsafe_load[width=VW](k * VW).fma(p, acc[i * HV + k])
    comptime for i in range(RT):
        var o = ob.unsafe_offset((i0 + i) * D + PART * HV * VW)
        comptime for k in range(HV):
            o.unsafe_store(k * VW, acc[i * HV + k])


@always_inline
def _block[WT: DType](
    wid: Int, ctr: IPtr, phase0: Int, x: FPtr, mask: FPtr, kc: FPtr, vc: FPtr, ck: FPtr, cv: FPtr, w: WPtr[WT],
    y: FPtr, scratch: FPtr, A: Int, B: Int, T: Int, P: Int, CAP: Int, H: Int, D: Int, C: Int,
):
    """One block's phases, run by every worker together (phases phase0 .. phase0 + PHASES - 1 of ctr):
    y (R, D) = the block of x, the new tokens' keys and values written into kc, vc."""
    var R = B * T
    # the packed weights, in PACKED order
    var o = 0
    var ln1_w = w.unsafe_offset(o); o += D
    var ln1_b = w.unsafe_offset(o); o += D
    var qkv_w = w.unsafe_offset(o); o += 3 * D * D
    var qkv_b = w.unsafe_offset(o); o += 3 * D
    var out_w = w.unsafe_offset(o); o += D * D
    var out_b = w.unsafe_offset(o); o += D
    var ln2_w = w.unsafe_offset(o); o += D
    var ln2_b = w.unsafe_offset(o); o += D
    var cq_w = w.unsafe_offset(o); o += D * D
    var cq_b = w.unsafe_offset(o); o += D
    var co_w = w.unsafe_offset(o); o += D * D
    var co_b = w.unsafe_offset(o); o += D
    var ln3_w = w.unsafe_offset(o); o += D
    var ln3_b = w.unsafe_offset(o); o += D
    var fc1_w = w.unsafe_offset(o); o += 4 * D * D
    var fc1_b = w.unsafe_offset(o); o += 4 * D
    var fc2_w = w.unsafe_offset(o); o += 4 * D * D
    var fc2_b = w.unsafe_offset(o)
    # scratch (R, 7D): a LayerNorm output, the q/k/v (or the hidden layer: 4D), an attention output, a sum
    var h = scratch
    var wide = scratch.unsafe_offset(R * D)
    var att = scratch.unsafe_offset(5 * R * D)
    var tmp = scratch.unsafe_offset(6 * R * D)
    var G = B // A
    var cross_items = A * H * ((G * T + CROSS_ROWS - 1) // CROSS_ROWS)

    # self-attention: y = x + out(attend(q, the cache with the new tokens appended))
    def ln1(r: Int) {var x, var y, var h, var ln1_w, var ln1_b, var D}:
        _layer_norm[WT](x, ln1_w, ln1_b, h, r, D)
        for j in range(D):
            y.unsafe_store(r * D + j, x.unsafe_load(r * D + j))
    _share(ln1, ctr, phase0, R)

    def qkv(i: Int) {var h, var wide, var qkv_w, var qkv_b, var R, var D}:
        _linear_chunk[WT, False, False](h, qkv_w, qkv_b, wide, wide, R, 3 * D, D, i)
    _share(qkv, ctr, phase0 + 1, _chunks[WT](3 * D, D))

    def attend(i: Int) {var wide, var kc, var vc, var mask, var att, var T, var P, var CAP, var H, var D}:
        _append_head(wide, kc, vc, i // H, i % H, T, P, H, D, CAP)
        for t in range(T):
            _attend_self(wide, kc, vc, mask, att, i // H, t, i % H, T, P, H, D, CAP)
    _share(attend, ctr, phase0 + 2, B * H)

    def out(i: Int) {var att, var tmp, var y, var out_w, var out_b, var R, var D}:
        _linear_chunk[WT, False, True](att, out_w, out_b, tmp, y, R, D, D, i)
    _share(out, ctr, phase0 + 3, _chunks[WT](D, D))

    # cross-attention: y += cross_out(attend(q, the audio window))
    def ln2(r: Int) {var y, var h, var ln2_w, var ln2_b, var D}:
        _layer_norm[WT](y, ln2_w, ln2_b, h, r, D)
    _share(ln2, ctr, phase0 + 4, R)

    def cq(i: Int) {var h, var wide, var cq_w, var cq_b, var R, var D}:
        _linear_chunk[WT, False, False](h, cq_w, cq_b, wide, wide, R, D, D, i)
    _share(cq, ctr, phase0 + 5, _chunks[WT](D, D))

    def cross(i: Int) {var wide, var ck, var cv, var att, var G, var T, var H, var D, var C}:
        _attend_cross(wide, ck, cv, att, i, G, T, H, D, C)
    _share(cross, ctr, phase0 + 6, cross_items)

    def co(i: Int) {var att, var tmp, var y, var co_w, var co_b, var R, var D}:
        _linear_chunk[WT, False, True](att, co_w, co_b, tmp, y, R, D, D, i)
    _share(co, ctr, phase0 + 7, _chunks[WT](D, D))

    # MLP: y += fc2(gelu(fc1(ln(y))))
    def ln3(r: Int) {var y, var h, var ln3_w, var ln3_b, var D}:
        _layer_norm[WT](y, ln3_w, ln3_b, h, r, D)
    _share(ln3, ctr, phase0 + 8, R)

    def fc1(i: Int) {var h, var wide, var fc1_w, var fc1_b, var R, var D}:
        _linear_chunk[WT, True, False](h, fc1_w, fc1_b, wide, wide, R, 4 * D, D, i)
    _share(fc1, ctr, phase0 + 9, _chunks[WT](4 * D, D))

    def fc2(i: Int) {var wide, var tmp, var y, var fc2_w, var fc2_b, var R, var D}:
        _linear_chunk[WT, False, True](wide, fc2_w, fc2_b, tmp, y, R, D, 4 * D, i)
    _share(fc2, ctr, phase0 + 10, _chunks[WT](D, 4 * D))


def decoder_block_cpu[WT: DType](
    x: FPtr, mask: FPtr, kc: FPtr, vc: FPtr, ck: FPtr, cv: FPtr, w: WPtr[WT], ys: FPtr, scratch: FPtr,
    rows: Pointer[Int64, MutAnyOrigin], ln_w: FPtr, ln_b: FPtr, lw: WPtr[WT], logits: FPtr, ln: FPtr,
    L: Int, A: Int, B: Int, T: Int, P: Int, CAP: Int, H: Int, D: Int, C: Int, K: Int, V: Int,
):
    """All L blocks, one after another, then the final LayerNorm and the logits, in one parallel region:
    block l reads x (l = 0) or ys[l - 1] and writes ys[l]; its caches, cross keys/values and weights are the
    l-th of each stack. ln (R, D) = LayerNorm of ys[L - 1]; logits (B * K, V) = the rows `rows` (K of them,
    among each sequence's T new tokens) of ln against the panels lw, as gemv_nt sums them."""
    var R = B * T
    var ctr = stack_allocation[2 * (PHASES * MAX_LAYERS + 3), Int64]()
    for i in range(2 * (PHASES * L + 3)):
        ctr.unsafe_store(i, 0)
    var cache_len = B * H * CAP * DH
    var cross_len = A * H * DH * C
    var packed_len = _packed_len(D)
    var chunk = LOGIT_PANELS * PANEL  # vocabulary rows per work item of the logits product

    def worker(wid: Int) {var x, var mask, var kc, var vc, var ck, var cv, var w, var ys, var scratch, var ctr,
                          var rows, var ln_w, var ln_b, var lw, var logits, var ln,
                          var L, var A, var B, var T, var P, var CAP, var H, var D, var C, var R, var K, var V,
                          var cache_len, var cross_len, var packed_len, var chunk}:
        for l in range(L):
            _block[WT](
                wid, ctr, l * PHASES, x if l == 0 else ys.unsafe_offset((l - 1) * R * D), mask,
                kc.unsafe_offset(l * cache_len), vc.unsafe_offset(l * cache_len), ck.unsafe_offset(l * cross_len),
                cv.unsafe_offset(l * cross_len), w.unsafe_offset(l * packed_len), ys.unsafe_offset(l * R * D), scratch,
                A, B, T, P, CAP, H, D, C,
            )
        var last = ys.unsafe_offset((L - 1) * R * D)

        def final_ln(r: Int) {var last, var ln_w, var ln_b, var ln, var D}:
            _layer_norm[F32](last, ln_w, ln_b, ln, r, D)
        _share(final_ln, ctr, L * PHASES, R)

        def pick(i: Int) {var ln, var scratch, var rows, var T, var K, var D}:  # the rows asked for, in a row
            var src = ln.unsafe_offset(((i // K) * T + Int(rows.unsafe_load(i % K))) * D)
            var dst = scratch.unsafe_offset(i * D)
            for j in range(D):
                dst.unsafe_store(j, src.unsafe_load(j))
        _share(pick, ctr, L * PHASES + 1, B * K)

        def product(i: Int) {var scratch, var lw, var logits, var B, var K, var V, var D, var chunk}:
            gemv_range[WT](scratch, lw, logits, B * K, V, D, i * chunk, min(V, i * chunk + chunk))
        _share(product, ctr, L * PHASES + 2, (V + chunk - 1) // chunk)

    _on_workers(worker)


@extensibility.register("decoder_block")
struct DecoderBlock:
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
        comptime if target != "cpu":
            raise Error("decoder_block: CPU only")
        comptime if wdt != DType.float32 and wdt != DType.float16:
            raise Error("decoder_block: the packed weights must be float32 or float16")
        var R = x.dim_size(0)
        var D = x.dim_size(1)
        var packed_len = _packed_len(D)
        var L = weights.dim_size(0) // packed_len
        if L < 1 or L > MAX_LAYERS or weights.dim_size(0) != L * packed_len:
            raise Error("decoder_block: the packed weights are not 1 to 32 blocks of this width")
        if k_cache.dim_size(0) % L != 0 or cross_k.dim_size(0) % L != 0 or ys.dim_size(0) != L * R:
            raise Error("decoder_block: the caches, cross keys/values and outputs must hold every block's")
        var B = k_cache.dim_size(0) // L
        var H = k_cache.dim_size(1)
        var CAP = k_cache.dim_size(2)
        var P = Int(past.unsafe_ptr().unsafe_load(0))
        var T = mask.dim_size(0)
        var C = cross_k.dim_size(3)
        var A = cross_k.dim_size(0) // L
        var K = rows.dim_size(0)
        var V = logits.dim_size(1)
        if A < 1 or B % A != 0:
            raise Error("decoder_block: the rows must be whole groups of the audio windows' count")
        if B * T != R or H * DH != D or k_cache.dim_size(3) != DH or mask.dim_size(1) != T:
            raise Error("decoder_block: x, mask and the cache disagree on batch, tokens or width")
        if P < 0 or P + T > CAP or CAP > MAX_SELF or C > MAX_CROSS:
            raise Error("decoder_block: the cache holds at most 448 tokens, the audio window 1504 frames")
        if K < 1 or K > T or logits.dim_size(0) != B * K or ln.dim_size(0) != R or ln.dim_size(1) != D:
            raise Error("decoder_block: the logits must be (batch * rows, vocabulary), the LayerNorm (rows, width)")
        if logits_w.dim_size(0) != (V + PANEL - 1) // PANEL * PANEL * padded_k(D) or ln_w.dim_size(0) != D:
            raise Error("decoder_block: the logits' weights are not the vocabulary's panels of this width")
        for i in range(K):
            var r = Int(rows.unsafe_ptr().unsafe_load(i))
            if r < 0 or r >= T:
                raise Error("decoder_block: a logits row is not among the new tokens")
        decoder_block_cpu[wdt](
            x.unsafe_ptr(), mask.unsafe_ptr(), k_cache.unsafe_ptr(), v_cache.unsafe_ptr(),
            cross_k.unsafe_ptr(), cross_v.unsafe_ptr(), weights.unsafe_ptr(), ys.unsafe_ptr(), scratch.unsafe_ptr(),
            rows.unsafe_ptr(), ln_w.unsafe_ptr(), ln_b.unsafe_ptr(), logits_w.unsafe_ptr(), logits.unsafe_ptr(),
            ln.unsafe_ptr(), L, A, B, T, P, CAP, H, D, C, K, V,
        )
