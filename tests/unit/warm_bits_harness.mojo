"""Prints decoder_warps's prefetch plan: first its constants (the stages QKV, FC1 and LOGITS, the bits
WARM_OWN, WARM_NEXT, WARM_PANELS and WARM_KEEP), then one launch a line, in decoder_warps's order: the prefetch setting,
the block count, the launch's block and stage, and its L2 requests (`_warm_bits`). Built and run on the CPU by
tests/unit/test_warps_build.py."""
from kernels.decoder_warps import _warm_bits, FC1, FINAL_LN, LOGITS, QKV, WARM_KEEP, WARM_NEXT, WARM_OWN, WARM_PANELS


def main():
    print(QKV, FC1, LOGITS, WARM_OWN, WARM_NEXT, WARM_PANELS, WARM_KEEP)
    for prefetch in range(4):
        for L in [1, 2, 4, 6, 32]:
            for layer in range(L):
                for stage in range(FINAL_LN):
                    print(prefetch, L, layer, stage, _warm_bits(stage, layer, L, prefetch))
            for stage in [FINAL_LN, LOGITS]:
                print(prefetch, L, L - 1, stage, _warm_bits(stage, L - 1, L, prefetch))
