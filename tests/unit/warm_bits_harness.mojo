"""Prints decoder_warps's prefetch plan, one launch a line: the prefetch setting, the block count, the launch's
block and stage, and its L2 requests (`_warm_bits`). Built and run on the CPU by tests/unit/test_warps_build.py."""
from kernels.decoder_warps import _warm_bits, FINAL_LN, LOGITS


def main():
    for prefetch in range(3):
        for L in [1, 2, 4, 6, 32]:
            for layer in range(L):
                for stage in range(FINAL_LN):
                    print(prefetch, L, layer, stage, _warm_bits(stage, layer, L, prefetch))
            print(prefetch, L, L - 1, LOGITS, _warm_bits(LOGITS, L - 1, L, prefetch))
