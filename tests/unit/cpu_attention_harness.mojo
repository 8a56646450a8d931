"""Runs the CPU kernels' attention, whose tiles depend on the vector width the build targets: decoder_block's
cross-attention (1 to 9 rows of one audio window) and encoder_attention (windows of a few frames), on inputs
made from their indices (`value`, which tests/unit/test_kernel_isas.py computes alike). Built for AVX2 and for
AVX-512 by that test, whatever this machine's CPU, and run where the CPU has the instructions. Prints the
build's constants, then each case's name, size and outputs, one line each."""
from std.math import sqrt
from kernels.decoder_block import DH, KEY_ROWS, MIX_TILE_ROWS, STREAM_ROWS, TILE_ROWS, VW, _attend_cross
from kernels.encoder_attention import CROSS_ROWS, HEAD_CAP, _attend_frames, _pack_head

comptime F = Pointer[Float32, MutAnyOrigin]
comptime D = 384  # tiny.en's width: 6 heads of DH
comptime H = D // DH
comptime C = 1500  # an audio window's frames


def value(i: Int, salt: Int) -> Float32:
    """A value in [-1, 1), a multiple of 2^-15, from its index and its tensor's salt."""
    return Float32((i * 40503 + salt * 9973) % 65536) / 32768.0 - 1.0


def filled(n: Int, salt: Int) -> List[Float32]:
    var values = List[Float32](length=n, fill=0)
    for i in range(n):
        values[i] = value(i, salt)
    return values^


def ptr(mut values: List[Float32]) -> F:
    return rebind[F](values.unsafe_ptr())


def show(name: String, size: Int, result: List[Float32]):
    var line = name + " " + String(size)
    for v in result:
        line += " " + String(Float64(v))
    print(line)


def main():
    print(VW, STREAM_ROWS, KEY_ROWS, TILE_ROWS, MIX_TILE_ROWS)
    var ck = filled(H * DH * C, 1)  # keys (H, DH, C), values (H, C, DH): one window
    var cv = filled(H * C * DH, 2)
    for n in range(1, 10):  # rows of one window (a group's step, or a prompt's tokens)
        var q = filled(n * D, 3 + n)
        var o = List[Float32](length=n * D, fill=0)
        for item in range(H * ((n + 7) // 8)):
            _attend_cross(ptr(q), ptr(ck), ptr(cv), ptr(o), item, n, 1, H, D, C)
        show("cross", n, o)
    for T in [1, 9, 70]:  # frames of an encoder window: partial tiles of keys, rows and value blocks
        var qkv = filled(T * 3 * D, 20 + T)
        var packed = List[Float32](length=H * HEAD_CAP, fill=0)
        var o = List[Float32](length=T * D, fill=0)
        for bh in range(H):
            _pack_head(ptr(qkv), ptr(packed), bh, T, H, D)
        for item in range(H * ((T + CROSS_ROWS - 1) // CROSS_ROWS)):
            _attend_frames(ptr(qkv), ptr(packed), ptr(o), item, T, H, D)
        show("encoder", T, o)
