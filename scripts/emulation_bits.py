"""Whether a change to decoder_warps.mojo's CPU emulation changed any bit of its outputs.

A change meant only to make the emulation faster (how it loops over lanes, what it computes once instead of
once per warp) must leave every logit and block output as it was, or the emulation no longer does the GPU
kernels' arithmetic. Run `save` before the change and `check` after it:

    .venv/bin/python scripts/emulation_bits.py save /tmp/bits.npz
    .venv/bin/python scripts/emulation_bits.py check /tmp/bits.npz   # exits 1 naming the outputs that differ

The cases: a 60-token prefill then single steps; a group of 5 rows on one window (one logits row, then all);
two windows of 2 rows; a 300-token prefill after 2 tokens. Inputs are seeded, so both runs see the same.
"""
import sys

import numpy as np


def outputs() -> dict[str, np.ndarray]:
    from maxwhisper import weights
    from maxwhisper.decoder import get_decoder
    decoder = get_decoder(weights.load("bundled"), "cpu", "float32", warps=True)
    rng, out = np.random.default_rng(1), {}
    for name, n_audio, group, chunks, rows in [("prefill", 1, 1, [60, 1, 1], None), ("group", 1, 5, [7, 1, 3], [6]),
                                               ("windows", 2, 2, [5, 2], None), ("long", 1, 1, [2, 300, 1], None)]:
        feats = rng.standard_normal((n_audio, 1500, 384)).astype(np.float32)
        tokens = rng.integers(0, 51864, (n_audio * group, sum(chunks)))
        state, start = decoder.new_state(feats, group), 0
        for i, count in enumerate(chunks):
            out[f"{name}/logits{i}"] = state.step(tokens[:, start:start + count], rows if i == 0 else None)
            out.update({f"{name}/{tap}{i}": v for tap, v in state.tap_arrays().items()})
            start += count
    return out


def main(action: str, path: str) -> int:
    got = outputs()
    if action == "save":
        np.savez(path, **got)
        print(f"saved {len(got)} outputs to {path}")
        return 0
    saved = np.load(path)
    differ = [k for k in saved.files if not np.array_equal(saved[k], got[k], equal_nan=True)]
    print(f"{len(saved.files)} outputs compared, {len(differ)} differ" + (f": {', '.join(differ)}" if differ else ""))
    return 1 if differ else 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("save", "check"):
        sys.exit("usage: emulation_bits.py save|check PATH.npz")
    sys.exit(main(*sys.argv[1:]))
