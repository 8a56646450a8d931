"""Custom op encoder_attention: the encoder's self-attention, softmax(q k^T / 8) v per head, float32, on CPU.

    qkv (B, T, 3D): the fused q/k/v projection;  out (B, T, D): every head's output side by side
    packed (B, D / 64, HEAD_CAP): scratch, each head's keys transposed in tiles of KTILE, then its values

First each head's keys and values are packed as the loops below read them (one work item per head). Then one
work item is CROSS_ROWS query rows of one head: their scores against all T keys, a tile of KTILE keys at a time
(4 rows x 24 keys summed in registers with AVX2, 8 rows x 48 keys with AVX-512; the tile kept in L1 for every
row); the softmax's exponentials and sums (the division left to the output); the output, 4 rows x a cache line
of the head (AVX-512: 8 rows x two cache lines) at a time, over blocks of VBLOCK values kept in L1. A head's keys and values (768 KB at T = 1500) stay in the core's L2 while its items
run. Against the graph's attention (a batched product, a softmax of the whole (H, T, T) scores in memory, a
second product: 50 ms a layer at tiny's width) this took 35-38 against 50 ms in one run, and tiny's encoder
0.83-0.92 of its time per window (AMD EPYC, AVX2, one process, interleaved). The 8-row tiles on AVX-512 took
tiny's encoder from 115-117 to 105-109 ms a window, the same bits (AMD EPYC Zen 5, three alternating runs).
"""

import extensibility
from extensibility import InputTensor, OutputTensor
from max.gpu.host import DeviceContext
from std.math import exp, sqrt
from std.memory import bitcast, stack_allocation

from .decoder_block import (
    CROSS_ROWS, DH, FPtr, MAX_CROSS, TILE_ROWS, TILE_VECS, VW, Vec, F32, _on_workers, _share
)

comptime MAX_FRAMES = MAX_CROSS
comptime KTILE = TILE_VECS * VW  # keys per packed tile: the columns of one register tile of scores (24 with AVX2)
# The output's register tiles take TILE_ROWS rows (as the scores' do) by a part of the head's width: a cache line
# with AVX2's 16 registers, two with AVX-512's 32.
comptime MIX_PARTS = 2 if VW >= 16 else 4
comptime VBLOCK = 64  # keys per block of the values (16 KB) that every row's output sums take in turn
comptime SP = (MAX_FRAMES + KTILE - 1) // KTILE * KTILE  # row stride of an item's scores
# scratch per head: its keys in tiles, then its values; sized for tiles of up to 48 keys (AVX-512), so that the
# graph (maxwhisper.encoder.ATTENTION_HEAD_CAP) need not know the CPU's vector width
comptime HEAD_CAP = (1536 + MAX_FRAMES) * DH
comptime SPtr = Pointer[Float32, MutUntrackedOrigin]  # an item's own buffer, on its stack


@always_inline
def _scores[RT: Int](qs: SPtr, kb: FPtr, sp: SPtr, i0: Int, tile: Int):
    """sp[i0:i0+RT, tile's KTILE columns] = qs[i0:i0+RT] . K for the scaled queries qs (rows of DH) and one tile
    kb (DH, KTILE) of the packed keys: RT x KTILE sums in registers, the tile read as one stream."""
    var acc = Array[Vec, RT * TILE_VECS](fill=Vec(0))
    for j in range(DH):
        comptime for i in range(RT):
            var qv = Vec(qs.unsafe_load((i0 + i) * DH + j))
            comptime for v in range(TILE_VECS):
                acc[i * TILE_VECS + v] = kb.unsafe_load[width=VW](j * KTILE + v * VW).fma(qv, acc[i * TILE_VECS + v])
    comptime for i in range(RT):
        comptime for v in range(TILE_VECS):
            sp.unsafe_store((i0 + i) * SP + tile * KTILE + v * VW, acc[i * TILE_VECS + v])


@always_inline
def _exp_neg(x: Vec) -> Vec:
    """e^x for x <= 0, within about 1 ulp (Cephes' expf: x = n ln2 + r, |r| <= ln2 / 2, a degree-6 polynomial in r,
    then n added to the exponent); below -87 (where e^x is under float32's smallest normal) about 1e-38."""
    var xc = max(x, Vec(-87.0))
    var n = round(xc * Float32(1.4426950408889634))
    var r = n.fma(Vec(-0.693359375), xc)  # ln 2 in two parts, for an exact reduction
    r = n.fma(Vec(2.12194440e-4), r)
    var p = Vec(1.9875691500e-4)
    p = p.fma(r, Vec(1.3981999507e-3))
    p = p.fma(r, Vec(8.3334519073e-3))
    p = p.fma(r, Vec(4.1665795894e-2))
    p = p.fma(r, Vec(1.6666665459e-1))
    p = p.fma(r, Vec(5.0000001201e-1))
    p = (p * r).fma(r, r) + 1
    return bitcast[F32, VW](bitcast[DType.int32, VW](p) + (n.cast[DType.int32]() << 23))


@always_inline
def _softmax_rows(sp: SPtr, sums: SPtr, n: Int, T: Int):
    """Row i < n of sp (stride SP) = e^(s - max s) in place, its sum in sums[i]: the softmax before its division,
    which the output's sums take instead (one pass over the scores fewer)."""
    var tv = T - T % VW
    for i in range(n):
        var row = sp.unsafe_offset(i * SP)
        var top_v = Vec(Float32.MIN)
        for c in range(0, tv, VW):
            top_v = max(top_v, row.unsafe_load[width=VW](c))
        var top = top_v.reduce_max()
        for c in range(tv, T):
            top = max(top, row.unsafe_load(c))
        var total_v = Vec(0)
        for c in range(0, tv, VW):
            var e = _exp_neg(row.unsafe_load[width=VW](c) - top)
            row.unsafe_store(c, e)
            total_v += e
        var total = total_v.reduce_add()
        for c in range(tv, T):
            var e = exp(row.unsafe_load(c) - top)
            row.unsafe_store(c, e)
            total += e
        sums.unsafe_store(i, total)


@always_inline
def _mix[RT: Int, PART: Int](vb: FPtr, sp: SPtr, ab: SPtr, i0: Int, c0: Int, c1: Int):
    """Part PART (of MIX_PARTS) of the head's width of rows i0 .. i0 + RT - 1 of ab (DH wide) += sum_c e[i, c]
    V[c, :] over keys c0 .. c1 - 1, summed in registers in key order."""
    comptime HV = DH // VW // MIX_PARTS
    var acc = Array[Vec, RT * HV](fill=Vec(0))
    comptime for i in range(RT):
        comptime for k in range(HV):
            acc[i * HV + k] = ab.unsafe_load[width=VW]((i0 + i) * DH + (PART * HV + k) * VW)
    for c in range(c0, c1):
        var vrow = vb.unsafe_offset(c * DH + PART * HV * VW)
        comptime for i in range(RT):
            var p = Vec(sp.unsafe_load((i0 + i) * SP + c))
            comptime for k in range(HV):
                acc[i * HV + k] = vrow.unsafe_load[width=VW](k * VW).fma(p, acc[i * HV + k])
    comptime for i in range(RT):
        comptime for k in range(HV):
            ab.unsafe_store((i0 + i) * DH + (PART * HV + k) * VW, acc[i * HV + k])


@always_inline
def _attend_frames(qkv: FPtr, packed: FPtr, dst: FPtr, item: Int, T: Int, H: Int, D: Int):
    """Work item `item`: up to CROSS_ROWS query rows of one (batch item, head), over all T keys."""
    var chunks = (T + CROSS_ROWS - 1) // CROSS_ROWS
    var NT = (T + KTILE - 1) // KTILE
    var b = item // (H * chunks)
    var hh = (item // chunks) % H
    var t0 = (item % chunks) * CROSS_ROWS
    var n = min(CROSS_ROWS, T - t0)
    var scale = Float32(1.0 / sqrt(Float64(DH)))
    var qb = qkv.unsafe_offset((b * T + t0) * 3 * D + hh * DH)  # rows 3D apart
    var kb = packed.unsafe_offset((b * H + hh) * HEAD_CAP)
    var vb = kb.unsafe_offset(NT * DH * KTILE)
    var ob = dst.unsafe_offset((b * T + t0) * D + hh * DH)
    # the rows' scores, their scaled queries, their outputs' sums, and the scores' sums
    var sp = stack_allocation[CROSS_ROWS * (SP + 2 * DH + 1), Float32]()
    var qs = sp.unsafe_offset(CROSS_ROWS * SP)
    var ab = qs.unsafe_offset(CROSS_ROWS * DH)
    var sums = ab.unsafe_offset(CROSS_ROWS * DH)
    for r in range(n):
        comptime for c in range(DH // VW):
            qs.unsafe_store(r * DH + c * VW, qb.unsafe_load[width=VW](r * 3 * D + c * VW) * scale)
            ab.unsafe_store(r * DH + c * VW, Vec(0))
    for tile in range(NT):  # a tile of keys serves every row while it is in L1
        var kt = kb.unsafe_offset(tile * DH * KTILE)
        var i = 0
        while i + TILE_ROWS <= n:
            _scores[TILE_ROWS](qs, kt, sp, i, tile)
            i += TILE_ROWS
        comptime for rt in range(1, TILE_ROWS):
            if n - i == rt:
                _scores[rt](qs, kt, sp, i, tile)
    _softmax_rows(sp, sums, n, T)
    for c0 in range(0, T, VBLOCK):  # a block of values serves every row while it is in L1
        var c1 = min(T, c0 + VBLOCK)
        var i = 0
        while i + TILE_ROWS <= n:
            comptime for part in range(MIX_PARTS):
                _mix[TILE_ROWS, part](vb, sp, ab, i, c0, c1)
            i += TILE_ROWS
        comptime for rt in range(1, TILE_ROWS):
            if n - i == rt:
                comptime for part in range(MIX_PARTS):
                    _mix[rt, part](vb, sp, ab, i, c0, c1)
    for r in range(n):
        var inv = 1 / sums.unsafe_load(r)
        comptime for c in range(DH // VW):
            ob.unsafe_store(r * D + c * VW, ab.unsafe_load[width=VW](r * DH + c * VW) * inv)


@always_inline
def _pack_head(qkv: FPtr, packed: FPtr, bh: Int, T: Int, H: Int, D: Int):
    """Head bh = b * H + h's keys, transposed in tiles of KTILE (zeros past T), then its values, into its part of
    packed: (ceil(T / KTILE), DH, KTILE) then (T, DH)."""
    var b = bh // H
    var NT = (T + KTILE - 1) // KTILE
    var kt = packed.unsafe_offset(bh * HEAD_CAP)
    var vt = kt.unsafe_offset(NT * DH * KTILE)
    var rows = qkv.unsafe_offset(b * T * 3 * D + (bh % H) * DH)
    for t in range(NT * KTILE):
        var tile = kt.unsafe_offset((t // KTILE) * DH * KTILE + t % KTILE)
        if t < T:
            var k = rows.unsafe_offset(t * 3 * D + D)
            for j in range(DH):
                tile.unsafe_store(j * KTILE, k.unsafe_load(j))
            var v = rows.unsafe_offset(t * 3 * D + 2 * D)
            comptime for c in range(DH // VW):
                vt.unsafe_store(t * DH + c * VW, v.unsafe_load[width=VW](c * VW))
        else:
            for j in range(DH):
                tile.unsafe_store(j * KTILE, Float32(0))


@extensibility.register("encoder_attention")
struct EncoderAttention:
    @staticmethod
    def execute[target: StaticString](
        output: OutputTensor[dtype=DType.float32, rank=3, ...],
        packed: OutputTensor[dtype=DType.float32, rank=3, ...],
        qkv: InputTensor[dtype=DType.float32, rank=3, ...],
        ctx: DeviceContext,
    ) raises:
        comptime if target != "cpu":
            raise Error("encoder_attention: CPU only")
        comptime assert SP <= 1536, "encoder_attention: HEAD_CAP holds tiles of up to 48 keys"
        var B = qkv.dim_size(0)
        var T = qkv.dim_size(1)
        var D = output.dim_size(2)
        var H = D // DH
        if qkv.dim_size(2) != 3 * D or H * DH != D or output.dim_size(0) != B or output.dim_size(1) != T:
            raise Error("encoder_attention: qkv must be (B, T, 3D) for out (B, T, D), D a multiple of 64")
        if T > MAX_FRAMES or packed.dim_size(0) != B or packed.dim_size(1) != H or packed.dim_size(2) != HEAD_CAP:
            raise Error("encoder_attention: at most 1504 frames, and the scratch (B, D / 64, HEAD_CAP)")
        var qs = qkv.strides()
        var os = output.strides()
        if qs[2] != 1 or qs[1] != 3 * D or qs[0] != T * 3 * D or os[2] != 1 or os[1] != D or os[0] != T * D:
            raise Error("encoder_attention: qkv and out must be contiguous")
        var ps = packed.strides()
        if ps[2] != 1 or ps[1] != HEAD_CAP or ps[0] != H * HEAD_CAP:
            raise Error("encoder_attention: the packed scratch must be contiguous")
        var items = B * H * ((T + CROSS_ROWS - 1) // CROSS_ROWS)
        if items == 0:
            return
        var qp = qkv.unsafe_ptr()
        var pp = packed.unsafe_ptr()
        var op = output.unsafe_ptr()
        var ctr = stack_allocation[4, Int64]()
        for i in range(4):
            ctr.unsafe_store(i, 0)

        def worker(wid: Int) {var qp, var pp, var op, var ctr, var items, var B, var T, var H, var D}:
            def pack(i: Int) {var qp, var pp, var T, var H, var D}:
                _pack_head(qp, pp, i, T, H, D)
            _share(pack, ctr, 0, B * H)

            def item(i: Int) {var qp, var pp, var op, var T, var H, var D}:
                _attend_frames(qp, pp, op, i, T, H, D)
            _share(item, ctr, 1, items)

        _on_workers(worker)
