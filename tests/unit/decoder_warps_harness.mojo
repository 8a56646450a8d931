"""Launches decoder_warps's GPU kernels for tiny.en's shapes, float32 and float16 weights: built with
`mojo build --target-accelerator sm_90 --emit asm` (tests/unit/test_warps_build.py), it compiles every kernel
of the op to PTX on a machine without a GPU. It is never run."""

from max.gpu.host import DeviceContext
from kernels.decoder_warps import decoder_warps

comptime F = Pointer[Float32, MutAnyOrigin]
comptime I = Pointer[Int64, MutAnyOrigin]


def launch[WT: DType](ctx: DeviceContext) raises:
    var f = ctx.enqueue_create_buffer[DType.float32](16)
    var h = ctx.enqueue_create_buffer[WT](16)
    var i = ctx.enqueue_create_buffer[DType.int64](16)
    var fp = rebind[F](f.unsafe_ptr())
    var wp = rebind[Pointer[Scalar[WT], MutAnyOrigin]](h.unsafe_ptr())
    var ip = rebind[I](i.unsafe_ptr())
    # L, A, B, T, CAP, H, D, C, K, V, SW: 4 blocks, one window and row, one new token, tiny.en's widths
    decoder_warps[True, WT](ctx, fp, fp, ip, fp, fp, fp, fp, wp, fp, fp, ip, fp, fp, wp, fp, fp,
                            4, 1, 1, 1, 448, 6, 384, 1500, 1, 51864, 21480)


def main() raises:
    var ctx = DeviceContext()
    launch[DType.float32](ctx)
    launch[DType.float16](ctx)
    ctx.synchronize()
