"""Small shared test helpers (fixtures live in conftest.py)."""
from __future__ import annotations

import gc
import pathlib

import numpy as np
import pytest

from maxwhisper.stages import encoder_tap_names
from maxwhisper.metrics import compare_taps, parity_report

GOLDEN = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "golden"


def native_bf16_or_slow() -> list:
    """Marks for the bfloat16 encoder's CPU parity: none where the CPU computes bfloat16 natively
    (avx512_bf16, AMX), `slow` elsewhere. Without them bfloat16 is emulated (a correctness path only, never
    a fast one) and its graph's cold compile (114 s on the AVX2 CI machine) took the cold `make test` over
    its 15 minutes; `pytest -m slow` and `tox -e slow` still run it there, and GPU runs cover bfloat16."""
    from tests.bench.conftest import cpu_has_native_bf16
    return [] if cpu_has_native_bf16() else [pytest.mark.slow]


# The decoder's step kernels by name: (where it runs, get_decoder's keywords). "warps" is decoder_warps's GPU
# kernels emulated lane by lane on the CPU, so the suite checks their arithmetic where no GPU is.
DECODERS = {"cpu": ("cpu", {}), "warps": ("cpu", {"warps": True}), "gpu": ("gpu", {"fused": False}),
            "gpu-warps": ("gpu", {"fused": True})}  # gpu: graph ops (the default there is the warp kernels)
DECODER_PARAMS = ["cpu", "warps", *(pytest.param(n, marks=pytest.mark.gpu) for n in ("gpu", "gpu-warps"))]


def decoder_named(bundled, name: str):
    """The process-wide compiled decoder of that name (DECODERS), tiny.en float32."""
    from maxwhisper.decoder import get_decoder
    device, keywords = DECODERS[name]
    return get_decoder(bundled, device, "float32", **keywords)


ATTENTION_WIDTH, ATTENTION_HEADS = 384, 6  # the attention kernel's probe (conftest's kernel_probe): tiny's


def heads_f64(qkv: np.ndarray) -> list[np.ndarray]:
    """q, k, v of qkv (batch, time, 3D) per head, (batch, heads, time, 64), in float64."""
    b, t, _ = qkv.shape
    return [z.astype(np.float64).reshape(b, t, ATTENTION_HEADS, -1).transpose(0, 2, 1, 3) for z in np.split(qkv, 3, -1)]


def attention_f64(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """softmax(q k^T / 8) v per head (batch, heads, time, 64), heads merged: (batch, time, heads * 64)."""
    b, h, t, _ = q.shape
    s = q @ k.transpose(0, 1, 3, 2) / 8.0
    p = np.exp(s - s.max(-1, keepdims=True))
    return ((p / p.sum(-1, keepdims=True)) @ v).transpose(0, 2, 1, 3).reshape(b, t, -1)


def attention_excess(got: np.ndarray, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """|got - attention_f64| over the float32 bound of each head's outputs (<= 1 passes). Each output mixes
    its head's values by weights whose error follows the scores' float32 rounding: bounded by |v|max (1 + max
    sum |q||k| / 8) per head; measured worst 6.3e-8 of that (one float32 ulp) over 60 random draws of the
    encoder's shapes and scales, so 4e-7 leaves room and still fails a wrong row, head, key, value or scale."""
    magnitude = (np.abs(q) @ np.abs(k).transpose(0, 1, 3, 2) / 8).max(axis=(2, 3))  # (batch, heads)
    bound = 4e-7 * np.repeat(np.abs(v).max(axis=(2, 3)) * (1 + magnitude), q.shape[-1], axis=1)[:, None, :]
    return np.abs(got - attention_f64(q, k, v)) / bound


def mojo_command(harness: str, out: pathlib.Path, *options: str) -> list[str]:
    """The `mojo build` command of a harness in tests/unit, with the kernels' package on the import path. Both
    are built from content-named copies, as the graphs take the kernels (`gemv.stable_kernels_path`): `mojo
    build` caches by the files' paths, so a fresh clone's own files rebuilt from scratch (a harness: 4.8 to
    6.0 s, then 1.3 s from the cache; the two harness fixtures took 9.3 and 9.9 s in a fresh clone's `make
    test`, 1.9 and 2.2 s again). It imports maxwhisper.gemv, which sets up MAX's graph context: call it on the
    main thread, not a worker's."""
    import hashlib
    import os
    import shutil
    import sys
    from maxwhisper.gemv import SOURCES, stable_kernels_path
    mojo = pathlib.Path(sys.executable).parent / "mojo"
    mojo = str(mojo) if mojo.is_file() else shutil.which("mojo")
    assert mojo, "the mojo CLI ships with max in the venv"
    source, kernels = pathlib.Path(__file__).resolve().parent / "unit" / harness, stable_kernels_path()
    if kernels != SOURCES:  # beside the kernels' copy, named by its own content too
        text = source.read_bytes()
        copy = kernels.parent / f"{source.stem}-{hashlib.sha256(text).hexdigest()[:12]}.mojo"
        if not copy.is_file():
            staging = copy.with_suffix(f".{os.getpid()}.tmp")
            staging.write_bytes(text)
            os.replace(staging, copy)  # atomic: a concurrent run finds the whole file or none
        source = copy
    return [mojo, "build", "-I", str(kernels.parent), *options, str(source), "-o", str(out)]


def mojo_build(harness: str, out: pathlib.Path, *options: str):
    """Run `mojo_command` (the completed process: a failed build's errors are in its stderr)."""
    import subprocess
    return subprocess.run(mojo_command(harness, out, *options), capture_output=True, text=True, timeout=300)


def kernel_probe_run(probe, gemv: list[np.ndarray] | None = None,
                     attention: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """Run conftest's `kernel_probe` on one op's inputs, the other op given its smallest; returns that op's
    outputs (gemv_nt: float32 weights, float16 weights, and float32 with the pairs micro kernel forced off
    and on; attention: its output)."""
    from max.driver import Buffer
    from maxwhisper.gemv import panels
    one = np.ones((1, 1), np.float32)
    idle_gemv = [one, panels(one), panels(one.astype(np.float16)), np.zeros(1, np.float32)]
    idle_attention = [np.zeros((1, 1, 3 * ATTENTION_WIDTH), np.float32)]
    inputs = (gemv or idle_gemv) + (attention or idle_attention)
    outputs = [o.to_numpy() for o in probe.execute(*map(Buffer.from_numpy, inputs))]
    return outputs[:4] if gemv else outputs[4:]


def as_taps(outputs: list[np.ndarray]) -> dict[str, np.ndarray]:
    """An encoder graph's outputs (its taps) by stage name."""
    return dict(zip(encoder_tap_names(len(outputs) - 4), outputs))


def assert_parity(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray], dtype: str = "float32",
                  label: str = "") -> None:
    """Fail naming the first stage outside tolerance (and `label`: which input), with the per-stage table."""
    assert_parity_each([(label, actual, expected)], dtype)


def assert_parity_each(cases, dtype: str = "float32") -> None:
    """assert_parity over (label, actual, expected) cases, every case compared before failing: a run on a
    borrowed GPU then reports each window's table, not only the first failing one's."""
    reports = []
    for label, actual, expected in cases:
        results = compare_taps(actual, expected, dtype)
        if not all(r.ok for r in results):
            reports.append(f"{label}: " * bool(label) + parity_report(results))
    assert not reports, "\n".join(reports)


def segment_tokens(result: dict) -> list[list[int]]:
    """The tokens of each segment of a transcribe() result."""
    return [s["tokens"] for s in result["segments"]]


def item(taps: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    """One batch item of every tap."""
    return {name: t[i] for name, t in taps.items()}


def load_golden(name: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    from safetensors import safe_open
    path = GOLDEN / f"{name}.safetensors"
    assert path.is_file(), f"{path} is missing: run `make golden`"
    with safe_open(str(path), "np") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def golden_slices(golden: dict[str, np.ndarray], taps: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """(actual rows, golden rows) per stage, for `assert_parity` on the stored slices."""
    expected = {name: golden[f"{name}.slice"] for name in taps}
    actual = {name: t[0, golden[f"{name}.rows"], :expected[name].shape[1]] for name, t in taps.items()}
    return actual, expected


def half_rounded(loaded):
    """`loaded`'s weights rounded to float16 and back, as every released Whisper checkpoint stores them (the fused
    decoder kernels then read them in half, exactly)."""
    import dataclasses
    return dataclasses.replace(loaded, state_dict={k: v.half().float() for k, v in loaded.state_dict.items()},
                               source=loaded.source + " (rounded to half)")


def decoder_taps(decoder, features, tokens, prefill: int) -> dict[str, np.ndarray]:
    """The MAX decoder's taps and logits for `tokens` (batch, n): a prefill of `prefill` tokens, then one
    token per step, concatenated over the tokens (the same rows one PyTorch pass gives)."""
    state = decoder.new_state(features, tokens.shape[0] // features.shape[0])
    steps = []
    for a, b in [(0, prefill), *((i, i + 1) for i in range(prefill, tokens.shape[1]))]:
        logits = state.step(tokens[:, a:b])
        steps.append({**state.tap_arrays(), "logits": logits})
    return {name: np.concatenate([s[name] for s in steps], axis=1) for name in steps[0]}


def assert_words_agree(got: dict, want: dict, within_s: float) -> None:
    """Two transcripts (word_timestamps=True) have the same words, each start and end within `within_s`."""
    words = [[w for s in result["segments"] for w in s["words"]] for result in (got, want)]
    assert words[1], "the reference transcript has no words"
    assert [w["word"] for w in words[0]] == [w["word"] for w in words[1]]
    for a, b in zip(*words):
        assert abs(a["start"] - b["start"]) <= within_s and abs(a["end"] - b["end"]) <= within_s, (a, b)


def transcribe_clip(pipe, clip: str, options: dict | None = None) -> dict:
    """A fixture clip through `pipe` as the parity tests compare it: torch's RNG seeded (sampled fallbacks
    draw the same), with word timestamps."""
    import torch
    from conftest import CLIP_PATHS
    torch.manual_seed(0)
    return pipe.transcribe(CLIP_PATHS[clip], word_timestamps=True, **(options or {}))


class FakeNvml:
    """pynvml with two GPUs, 'GPU-aaa' at index 0 and 'GPU-bbb' at index 1."""
    UUIDS = ["GPU-aaa", "GPU-bbb"]

    def nvmlInit(self):
        pass

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, i):
        return self.UUIDS[i]

    def nvmlDeviceGetHandleByUUID(self, uuid):
        if uuid not in self.UUIDS:
            raise ValueError(uuid)
        return uuid


def assert_freed_on_release(held, release, weights_sha256: str) -> None:
    """`release(weights_sha256)` (encoder.release or decoder.release) frees the compiled model that `held`, a weak
    reference, points to, once the test has dropped its own references: the process cache held the only other
    one, which is what the `released` fixture drops."""
    release(weights_sha256)
    gc.collect()
    assert held() is None, "a compiled model outlived its release: every slow size's would stay in memory"
