"""Whether a change to a decoder kernel that must not change its arithmetic changed any bit of its outputs.

A change meant only to make a kernel faster (how decoder_block tiles its loops, how decoder_warps's CPU
emulation loops over lanes or what it computes once instead of once per warp) must leave every logit and
block output as it was. Run `save` before the change and `check` after it:

    .venv/bin/python scripts/kernel_bits.py save /tmp/bits.npz block   # block: decoder_block, the CPU step
    .venv/bin/python scripts/kernel_bits.py check /tmp/bits.npz block  # exits 1 naming the outputs that differ

(`warps` for decoder_warps's emulation.) The cases: a 60-token prefill then single steps; a group of 5 rows on
one window (one logits row, then all); a group of 3 (3 and 6 rows at once); two windows of 2 rows; a
300-token prefill after 2 tokens. Between them each step's rows on one window come 1 to 8 at a time, as the
kernels tile them. Inputs are seeded, so both runs see the same.
"""
import sys

import numpy as np

KERNELS = {"block": {}, "warps": {"warps": True}}


def outputs(kernel: str) -> dict[str, np.ndarray]:
    from maxwhisper import weights
    from maxwhisper.decoder import get_decoder
    decoder = get_decoder(weights.load("bundled"), "cpu", "float32", **KERNELS[kernel])
    rng, out = np.random.default_rng(1), {}
    for name, n_audio, group, chunks, rows in [("prefill", 1, 1, [60, 1, 1], None), ("group", 1, 5, [7, 1, 3], [6]),
                                               ("group3", 1, 3, [4, 1, 2], None), ("windows", 2, 2, [5, 2], None),
                                               ("long", 1, 1, [2, 300, 1], None)]:
        feats = rng.standard_normal((n_audio, 1500, 384)).astype(np.float32)
        tokens = rng.integers(0, 51864, (n_audio * group, sum(chunks)))
        state, start = decoder.new_state(feats, group), 0
        for i, count in enumerate(chunks):
            out[f"{name}/logits{i}"] = state.step(tokens[:, start:start + count], rows if i == 0 else None)
            out.update({f"{name}/{tap}{i}": v for tap, v in state.tap_arrays().items()})
            start += count
    return out


def main(action: str, path: str, kernel: str) -> int:
    got = outputs(kernel)
    if action == "save":
        np.savez(path, **got)
        print(f"saved {len(got)} outputs of {kernel} to {path}")
        return 0
    saved = np.load(path)
    differ = [k for k in saved.files if not np.array_equal(saved[k], got[k], equal_nan=True)]
    print(f"{len(saved.files)} outputs of {kernel} compared, {len(differ)} differ"
          + (f": {', '.join(differ)}" if differ else ""))
    return 1 if differ else 0


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("save", "check") or sys.argv[3] not in KERNELS:
        sys.exit("usage: kernel_bits.py save|check PATH.npz block|warps")
    sys.exit(main(*sys.argv[1:]))
