"""Custom op decoder_block: one Whisper decoder block for the new tokens of each row, float32, on CPU.

    x (R, D), R = B * T rows (row r is token t = r % T of sequence b = r // T)
    -> x + self_attn(ln(x)) -> x + cross_attn(ln(x)) -> x + mlp(ln(x))        out (R, D)
    with the grown self-attention cache (B, H, P + T, 64) of keys and of values. The B rows are groups
    of B / A rows (a beam or best-of group) per audio window; cross keys and values come once per window.

One op per block replaces about 25 graph kernels: a decoder step is memory-bound and small, so the
per-kernel dispatch of a graph of small ops costs more than the arithmetic. Every weight is streamed
once per call by `gemv_nt_cpu`; the attention over the cache and over the audio window is split by
(row, head) across the workers. The block's weights arrive packed in one vector, in the order
`PACKED` (maxwhisper/fused.py) lists, matrices in PyTorch's (out, in) layout, float32 or float16 (widened to
float32 as loaded: the float32 arithmetic, on half the bytes, for half-representable weights):
    attn_ln.w, attn_ln.b, qkv.w (3D, D), qkv.b, out.w (D, D), out.b, cross_ln.w, cross_ln.b,
    cross_q.w (D, D), cross_q.b, cross_out.w (D, D), cross_out.b, mlp_ln.w, mlp_ln.b,
    fc1.w (4D, D), fc1.b, fc2.w (D, 4D), fc2.b
"""

import extensibility
from extensibility import InputTensor, OutputTensor
from max.gpu.host import DeviceContext
from max.algorithm import parallelize
from std.math import exp, erf, sqrt
from std.sys import simd_width_of

from .gemv_nt import WPtr, gemv_nt_cpu

comptime F32 = DType.float32
comptime VW = simd_width_of[F32]()
comptime Vec = SIMD[F32, VW]
comptime FPtr = Pointer[Float32, MutAnyOrigin]
comptime DH = 64  # head width of every Whisper size
comptime MAX_SELF = 448  # n_text_ctx of every Whisper size
comptime MAX_CROSS = 1504  # n_audio_ctx (1500), rounded up to whole vectors
comptime LN_EPS = 1e-5
comptime CROSS_ROWS = 8  # rows of one audio window per pass over its cross-attention keys and values


@always_inline
def _layer_norm[WT: DType](xp: FPtr, wp: WPtr[WT], bp: WPtr[WT], op: FPtr, R: Int, D: Int):
    """op = LayerNorm(xp) row by row (statistics in float64)."""
    for r in range(R):
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
def _linear[WT: DType](xp: FPtr, wp: WPtr[WT], bp: WPtr[WT], op: FPtr, R: Int, N: Int, K: Int):
    """op (R, N) = xp (R, K) @ wp (N, K)^T + bp."""
    gemv_nt_cpu[WT](xp, wp, op, R, N, K, 1)
    for r in range(R):
        var o = op.unsafe_offset(r * N)
        for j in range(N):
            o.unsafe_store(j, o.unsafe_load(j) + bp.unsafe_load(j).cast[F32]())


@always_inline
def _add_into(xp: FPtr, yp: FPtr, n: Int):
    """xp += yp over n floats."""
    for j in range(n):
        xp.unsafe_store(j, xp.unsafe_load(j) + yp.unsafe_load(j))


@always_inline
def _dot64(a: FPtr, b: FPtr) -> Float32:
    var acc = Vec(0)
    comptime for c in range(DH // VW):
        acc = a.unsafe_load[width=VW](c * VW).fma(b.unsafe_load[width=VW](c * VW), acc)
    return acc.reduce_add()


def _self_attention(
    qkv: FPtr, kc: FPtr, vc: FPtr, mask: FPtr, dst: FPtr, B: Int, T: Int, P: Int, H: Int, D: Int
):
    """dst (R, D): each (row, head) attends over its cache of P + T keys (all P past ones visible, the new
    ones through mask (T, T)); qkv (R, 3D) holds the queries; kc, vc (B, H, P + T, DH) the grown cache."""
    var S = P + T
    var scale = Float32(1.0 / sqrt(Float64(DH)))

    def work(item: Int) {var qkv, var kc, var vc, var mask, var dst, var T, var P, var H, var D, var S, var scale}:
        var r = item // H
        var hh = item % H
        var b = r // T
        var t = r % T
        var q = qkv.unsafe_offset(r * 3 * D + hh * DH)
        var kb = kc.unsafe_offset((b * H + hh) * S * DH)
        var vb = vc.unsafe_offset((b * H + hh) * S * DH)
        var scores = Array[Float32, MAX_SELF](fill=0)
        var top = Float32.MIN
        for j in range(S):
            var s = _dot64(q, kb.unsafe_offset(j * DH)) * scale
            if j >= P:
                s += mask.unsafe_load(t * T + j - P)
            scores[j] = s
            top = max(top, s)
        var total: Float32 = 0
        for j in range(S):
            var e = exp(scores[j] - top)
            scores[j] = e
            total += e
        var acc = Array[Vec, DH // VW](fill=Vec(0))
        for j in range(S):
            var p = Vec(scores[j] / total)
            var vrow = vb.unsafe_offset(j * DH)
            comptime for c in range(DH // VW):
                acc[c] = vrow.unsafe_load[width=VW](c * VW).fma(p, acc[c])
        var o = dst.unsafe_offset(r * D + hh * DH)
        comptime for c in range(DH // VW):
            o.unsafe_store(c * VW, acc[c])

    parallelize(work, B * T * H)


def _cross_attention(
    q: FPtr, ck: FPtr, cv: FPtr, dst: FPtr, A: Int, G: Int, T: Int, H: Int, D: Int, C: Int
):
    """dst (R, D): each row attends over its audio window's keys ck (A, H, DH, C) and values cv (A, H, C, DH).
    The G * T rows of window a are rows a * G * T onwards; up to CROSS_ROWS of them share each pass over
    a head's keys and values, so a beam or best-of group reads its window once, not once per row."""
    var scale = Float32(1.0 / sqrt(Float64(DH)))
    var c_vec = C - C % VW
    var per_window = G * T
    var chunks = (per_window + CROSS_ROWS - 1) // CROSS_ROWS

    def work(item: Int) {var q, var ck, var cv, var dst, var H, var D, var C, var scale, var c_vec, var per_window, var chunks}:
        var a = item // (H * chunks)
        var hh = (item // chunks) % H
        var r0 = a * per_window + (item % chunks) * CROSS_ROWS
        var n = min(CROSS_ROWS, (a + 1) * per_window - r0)
        var kb = ck.unsafe_offset((a * H + hh) * DH * C)
        var vb = cv.unsafe_offset((a * H + hh) * C * DH)
        var buf = Array[Float32, CROSS_ROWS * MAX_CROSS](fill=0)
        var sp = buf.unsafe_ptr()
        for j in range(DH):  # scores[i, :] += q[i, j] * K[j, :], streaming K's rows once for all n rows
            var krow = kb.unsafe_offset(j * C)
            var qs = Array[Float32, CROSS_ROWS](fill=0)
            for i in range(n):
                qs[i] = q.unsafe_load((r0 + i) * D + hh * DH + j) * scale
            var c = 0
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
        for i in range(n):  # softmax of each row
            var row = sp.unsafe_offset(i * MAX_CROSS)
            var top = Float32.MIN
            for c in range(C):
                top = max(top, row.unsafe_load(c))
            var total: Float32 = 0
            for c in range(C):
                var e = exp(row.unsafe_load(c) - top)
                row.unsafe_store(c, e)
                total += e
            var inv = 1 / total
            for c in range(C):
                row.unsafe_store(c, row.unsafe_load(c) * inv)
        var acc = Array[Vec, CROSS_ROWS * (DH // VW)](fill=Vec(0))
        for c in range(C):  # out[i, :] = sum_c p[i, c] V[c, :], streaming V's rows once
            var vrow = vb.unsafe_offset(c * DH)
            var vv = Array[Vec, DH // VW](fill=Vec(0))
            comptime for k in range(DH // VW):
                vv[k] = vrow.unsafe_load[width=VW](k * VW)
            for i in range(n):
                var p = Vec(sp.unsafe_load(i * MAX_CROSS + c))
                comptime for k in range(DH // VW):
                    acc[i * (DH // VW) + k] = vv[k].fma(p, acc[i * (DH // VW) + k])
        for i in range(n):
            var o = dst.unsafe_offset((r0 + i) * D + hh * DH)
            comptime for k in range(DH // VW):
                o.unsafe_store(k * VW, acc[i * (DH // VW) + k])

    parallelize(work, A * H * chunks)


def _grow_caches(
    kp: FPtr, vp: FPtr, qkv: FPtr, kg: FPtr, vg: FPtr, B: Int, T: Int, P: Int, H: Int, D: Int
):
    """kg, vg (B, H, P + T, DH) = the past keys kp / values vp (B, H, P, DH), then the new rows' keys and
    values from qkv. Split by (keys or values, row, head) across the workers: at a batch of 5 and a few
    hundred cached tokens these are tens of MB a step, more than one core copies at full speed."""
    var S = P + T

    def work(item: Int) {var kp, var vp, var qkv, var kg, var vg, var T, var P, var H, var D, var S}:
        var which = 1 + item % 2  # 1: keys, 2: values (their place in qkv)
        var bh = item // 2
        var b = bh // H
        var hh = bh % H
        var past = kp if which == 1 else vp
        var grown = kg if which == 1 else vg
        var src = past.unsafe_offset(bh * P * DH)
        var dst = grown.unsafe_offset(bh * S * DH)
        for i in range(0, P * DH, VW):  # P * DH is a whole number of vectors (DH = 64)
            dst.unsafe_store(i, src.unsafe_load[width=VW](i))
        for t in range(T):
            var new = qkv.unsafe_offset((b * T + t) * 3 * D + which * D + hh * DH)
            var row = dst.unsafe_offset((P + t) * DH)
            comptime for c in range(DH // VW):
                row.unsafe_store(c * VW, new.unsafe_load[width=VW](c * VW))

    parallelize(work, 2 * B * H)


def decoder_block_cpu[WT: DType](
    x: FPtr, mask: FPtr, kp: FPtr, vp: FPtr, ck: FPtr, cv: FPtr, w: WPtr[WT],
    y: FPtr, kg: FPtr, vg: FPtr, scratch: FPtr,
    A: Int, B: Int, T: Int, P: Int, H: Int, D: Int, C: Int,
):
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

    # self-attention
    _layer_norm[WT](x, ln1_w, ln1_b, h, R, D)
    _linear[WT](h, qkv_w, qkv_b, wide, R, 3 * D, D)
    _grow_caches(kp, vp, wide, kg, vg, B, T, P, H, D)
    _self_attention(wide, kg, vg, mask, att, B, T, P, H, D)
    _linear[WT](att, out_w, out_b, y, R, D, D)
    _add_into(y, x, R * D)
    # cross-attention
    _layer_norm[WT](y, ln2_w, ln2_b, h, R, D)
    _linear[WT](h, cq_w, cq_b, wide, R, D, D)
    _cross_attention(wide, ck, cv, att, A, B // A, T, H, D, C)
    _linear[WT](att, co_w, co_b, tmp, R, D, D)
    _add_into(y, tmp, R * D)
    # MLP, with the exact (erf) GELU
    _layer_norm[WT](y, ln3_w, ln3_b, h, R, D)
    _linear[WT](h, fc1_w, fc1_b, wide, R, 4 * D, D)
    for i in range(0, R * 4 * D, VW):  # 4D is a whole number of vectors
        var v = wide.unsafe_load[width=VW](i)
        wide.unsafe_store(i, 0.5 * v * (1 + erf(v * Float32(0.7071067811865476))))
    _linear[WT](wide, fc2_w, fc2_b, tmp, R, D, 4 * D)
    _add_into(y, tmp, R * D)


@extensibility.register("decoder_block")
struct DecoderBlock:
    @staticmethod
    def execute[target: StaticString, wdt: DType](
        y: OutputTensor[dtype=DType.float32, rank=2, ...],
        k_grown: OutputTensor[dtype=DType.float32, rank=4, ...],
        v_grown: OutputTensor[dtype=DType.float32, rank=4, ...],
        scratch: OutputTensor[dtype=DType.float32, rank=2, ...],
        x: InputTensor[dtype=DType.float32, rank=2, ...],
        mask: InputTensor[dtype=DType.float32, rank=2, ...],
        k_past: InputTensor[dtype=DType.float32, rank=4, ...],
        v_past: InputTensor[dtype=DType.float32, rank=4, ...],
        cross_k: InputTensor[dtype=DType.float32, rank=4, ...],
        cross_v: InputTensor[dtype=DType.float32, rank=4, ...],
        weights: InputTensor[dtype=wdt, rank=1, ...],
        ctx: DeviceContext,
    ) raises:
        comptime if target != "cpu":
            raise Error("decoder_block: CPU only")
        comptime if wdt != DType.float32 and wdt != DType.float16:
            raise Error("decoder_block: the packed weights must be float32 or float16")
        var R = x.dim_size(0)
        var D = x.dim_size(1)
        var B = k_past.dim_size(0)
        var H = k_past.dim_size(1)
        var P = k_past.dim_size(2)
        var T = mask.dim_size(0)
        var C = cross_k.dim_size(3)
        var A = cross_k.dim_size(0)
        if A < 1 or B % A != 0:
            raise Error("decoder_block: the rows must be whole groups of the audio windows' count")
        if B * T != R or H * DH != D or k_past.dim_size(3) != DH or mask.dim_size(1) != T:
            raise Error("decoder_block: x, mask and the cache disagree on batch, tokens or width")
        if P + T > MAX_SELF or C > MAX_CROSS:
            raise Error("decoder_block: more than 448 tokens or 1504 audio frames")
        if weights.dim_size(0) != 14 * D * D + 17 * D:
            raise Error("decoder_block: the packed weights have the wrong size for this width")
        decoder_block_cpu[wdt](
            x.unsafe_ptr(), mask.unsafe_ptr(), k_past.unsafe_ptr(), v_past.unsafe_ptr(),
            cross_k.unsafe_ptr(), cross_v.unsafe_ptr(), weights.unsafe_ptr(),
            y.unsafe_ptr(), k_grown.unsafe_ptr(), v_grown.unsafe_ptr(), scratch.unsafe_ptr(),
            A, B, T, P, H, D, C,
        )
