"""Compile time (warm by default, cold opt-in) and end-to-end transcription of the longest clip."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import CLIPS
from maxwhisper.memory import PeakMemory
from maxwhisper.pipelines import Pipeline, cuda_available
from tests.bench.conftest import FULL

pytestmark = pytest.mark.bench
COLD = os.getenv("MAXWHISPER_BENCH_COLD") == "1"
# The longest clip in full mode; quick mode (inside `make test`) only checks the machinery, on the shortest.
CLIP = max(CLIPS, key=lambda p: p.stat().st_size) if FULL else min(CLIPS, key=lambda p: p.stat().st_size)
COMPILE_SNIPPET = """
import time, sys
from maxwhisper import weights
from maxwhisper.encoder import EncoderConfig, MaxEncoder
loaded = weights.load("bundled")
start = time.perf_counter()
MaxEncoder(EncoderConfig(loaded.dims, "cpu", sys.argv[1]), loaded.encoder_weights(), progress=lambda m: None)
print(time.perf_counter() - start)
"""


def compile_seconds(dtype: str, env: dict | None = None) -> float:
    """Load-and-compile time of the encoder in a fresh process (the in-process cache cannot help)."""
    out = subprocess.run([sys.executable, "-c", COMPILE_SNIPPET, dtype], capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, check=True)
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("cache", ["warm", pytest.param("cold", marks=pytest.mark.skipif(
    not COLD, reason="cold compile costs ~100 s: set MAXWHISPER_BENCH_COLD=1"))])
def test_compile_time(benchmark, cache, tmp_path_factory):
    benchmark.group = "compile"
    compile_seconds("float32")  # make sure the warm cache holds this graph
    seconds = []

    def measure():
        # cold: a new, empty cache directory every round (MAX keeps its cache under XDG_CACHE_HOME)
        cold_dir = str(tmp_path_factory.mktemp("modular-cache")) if cache == "cold" else None
        seconds.append(compile_seconds("float32", {"XDG_CACHE_HOME": cold_dir, "HOME": cold_dir} if cold_dir else None))
    benchmark.pedantic(measure, rounds=3 if FULL or cache == "cold" else 1, iterations=1)
    benchmark.extra_info.update(impl="max", device="cpu", dtype="float32", model="tiny.en", cache=cache,
                                compile_s=round(min(seconds), 2))
    assert all(s > 0 for s in seconds)
    if cache == "cold":  # a cold compile that takes warm time means the cache was not really empty
        assert min(seconds) > 3 * compile_seconds("float32")


IMPLS = ["cpu", "max", pytest.param("gpu", marks=pytest.mark.gpu)]


@pytest.mark.parametrize("impl", IMPLS)
def test_transcribe_clip(benchmark, impl):
    benchmark.group = "transcribe"
    pipe = Pipeline(impl, "bundled")
    pipe.transcribe(CLIP)  # warm-up: compile, allocator, caches
    results = []
    with PeakMemory() as memory:
        benchmark.pedantic(lambda: results.append(pipe.transcribe(CLIP)), rounds=3 if FULL else 1, iterations=1)
    audio_s = results[-1]["audio_seconds"]
    benchmark.extra_info.update(impl=impl, device="gpu" if impl == "gpu" else "cpu", model="tiny.en",
                                clip=CLIP.name, audio_seconds=round(audio_s, 2),
                                rtf=round(audio_s / benchmark.stats.stats.median, 2),
                                encode_s=round(results[-1]["timings"]["encode"], 3), **memory.as_extra_info())
    assert results[-1]["text"].strip() and benchmark.extra_info["rtf"] > 0
    assert not cuda_available() or impl != "gpu" or results[-1]["timings"]["encode"] > 0
