"""Compile time (warm by default, cold opt-in) and end-to-end transcription of the longest clip."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import LONG_CLIP, SHORT_CLIP
from maxwhisper.encoder import EncoderConfig, MaxEncoder
from maxwhisper.memory import PeakMemory
from maxwhisper.metrics import word_error_rate
from maxwhisper.pipelines import Pipeline
from tests.bench.conftest import FULL

pytestmark = pytest.mark.bench
COLD = os.getenv("MAXWHISPER_BENCH_COLD") == "1"
# The longest clip in full mode; quick mode (inside `make test`) only checks the machinery, on the shortest.
CLIP = LONG_CLIP if FULL else SHORT_CLIP
COMPILE_SNIPPET = """
import time, sys
start = time.perf_counter()
from maxwhisper import weights
from maxwhisper.encoder import EncoderConfig, MaxEncoder
loaded = weights.load("bundled")
ready = time.perf_counter()
MaxEncoder(EncoderConfig(loaded.dims, "cpu", sys.argv[1]), loaded.encoder_weights(), progress=lambda m: None)
print(ready - start, time.perf_counter() - ready)
"""


def fresh_process_seconds(dtype: str, env: dict | None = None) -> tuple[float, float]:
    """(imports + weights, graph build + compile) of the encoder in a fresh process."""
    out = subprocess.run([sys.executable, "-c", COMPILE_SNIPPET, dtype], capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, check=True)
    start_s, compile_s = map(float, out.stdout.strip().splitlines()[-1].split())
    return start_s, compile_s


# Full runs only: in quick runs (make test) test_paired_compile times the same warm load, and this case's
# three compiles cost ~12 s.
@(pytest.mark.bench if FULL else pytest.mark.slow)
def test_compile_time_warm(benchmark, bundled):
    """Graph build + compile (a load from MAX's cache) of the float32 encoder, timed in this process:
    what a user waits for after the imports. The in-process encoder cache is bypassed, so every round
    compiles; a fresh process's start (imports, weights) is reported on its own in extra_info."""
    benchmark.group = "compile"
    cfg, w = EncoderConfig(bundled.dims, "cpu", "float32"), bundled.encoder_weights()
    MaxEncoder(cfg, w, progress=lambda m: None)  # make sure the cache holds this graph
    encoder = benchmark.pedantic(lambda: MaxEncoder(cfg, w, progress=lambda m: None), rounds=3 if FULL else 2,
                                 iterations=1)
    benchmark.extra_info.update(impl="max", device="cpu", dtype="float32", model="tiny.en", cache="warm",
                                session_load_s=round(encoder.compile_s, 3))
    if FULL:  # a fresh process (~15 s here) only in full runs
        process_start_s, process_compile_s = fresh_process_seconds("float32")
        benchmark.extra_info.update(process_start_s=round(process_start_s, 2), process_compile_s=round(process_compile_s, 2))
    # The compiled model works: a timed compile that produced nothing would be fast for nothing.
    out = encoder(np.zeros((1, bundled.dims.n_mels, 2 * bundled.dims.n_audio_ctx), np.float32))
    assert out.shape == (1, bundled.dims.n_audio_ctx, bundled.dims.n_audio_state) and np.isfinite(out).all()


@pytest.mark.skipif(not COLD, reason="cold compile costs ~100 s a round: set MAXWHISPER_BENCH_COLD=1")
def test_compile_time_cold(benchmark, tmp_path_factory):
    """Cold: a new, empty cache directory every round, so it runs in a fresh process (MAX keeps its cache
    under XDG_CACHE_HOME, read at start). The timing includes the process start, ~5% of a ~100 s compile;
    the compile alone is in extra_info."""
    benchmark.group = "compile"
    seconds = []

    def measure():
        cold_dir = str(tmp_path_factory.mktemp("modular-cache"))
        seconds.append(fresh_process_seconds("float32", {"XDG_CACHE_HOME": cold_dir, "HOME": cold_dir}))
    benchmark.pedantic(measure, rounds=3, iterations=1)
    cold_s, warm_s = min(c for _, c in seconds), fresh_process_seconds("float32")[1]
    benchmark.extra_info.update(impl="max", device="cpu", dtype="float32", model="tiny.en", cache="cold",
                                compile_s=round(cold_s, 2), warm_compile_s=round(warm_s, 2),
                                cold_over_warm=round(cold_s / warm_s, 1),
                                process_start_s=round(min(s for s, _ in seconds), 2))
    # A sanity check on a ratio within this run, not a speed limit: a cold compile that takes warm time means the
    # cache was not really empty. docs/performance.md (Zen 5 EPYC, 2 cores): cold 100-230 s per graph, warm 2.9 s
    # in-process (7.1 s for a whole fresh process): 14x at the least, so 3x leaves room for a busy machine.
    assert cold_s > 3 * warm_s


# Every way to transcribe the clip, in one run: PyTorch, the MAX encoder with PyTorch's decoder, all MAX,
# and the peer faster-whisper (CTranslate2, same bundled model files, same greedy decoding, all cores).
# On a GPU: openai-whisper fp16 on CUDA (a CUDA torch), and the MAX graphs on the GPU under openai-whisper's
# loop on the CPU (MAX alone needs the GPU), stepping eagerly or replaying a captured device graph, the
# decoder step as graph ops (`max-gpu`: exact float32 products) or as the warp kernels (`-warps`:
# decoder_warps.mojo, the default on an NVIDIA GPU).
GPU_MAX = ("max-gpu", "max-gpu-captured", "max-gpu-warps", "max-gpu-warps-captured")
IMPLS = ["cpu", "max-encoder", "max", "faster-whisper-float32", "faster-whisper-int8",
         pytest.param("gpu", marks=[pytest.mark.gpu, pytest.mark.torch_cuda]),
         *(pytest.param(impl, marks=pytest.mark.gpu) for impl in GPU_MAX)]


def make_pipeline(impl: str) -> Pipeline:
    if impl.startswith("faster-whisper"):
        return Pipeline("faster-whisper", "bundled", dtype=impl.rsplit("-", 1)[1])
    if impl.startswith("max-gpu"):
        return Pipeline("max", "bundled", device="gpu", capture=impl.endswith("-captured"), warps="-warps" in impl)
    return Pipeline(impl, "bundled")


@pytest.mark.parametrize("impl", IMPLS)
def test_transcribe_clip(benchmark, impl, cpu_transcript):
    benchmark.group = "transcribe"
    pipe = make_pipeline(impl)
    with PeakMemory() as memory:  # the untimed warm-up: compile happened in Pipeline(), allocator and caches here
        pipe.transcribe(CLIP)
    if pipe.decode_timer:  # from here the timed rounds only
        pipe.decode_timer.reset()
    results = []
    benchmark.pedantic(lambda: results.append(pipe.transcribe(CLIP)), rounds=3 if FULL else 1, iterations=1)
    audio_s = results[-1]["audio_seconds"]
    timings = results[-1]["timings"]
    benchmark.extra_info.update(impl=impl, device="gpu" if "gpu" in impl else "cpu", model="tiny.en",
                                clip=CLIP.name, audio_seconds=round(audio_s, 2),
                                rtf=round(audio_s / benchmark.stats.stats.median, 2),
                                encode_s=round(timings["encode"], 3), decode_s=round(timings["decode"], 3),
                                **memory.as_extra_info())
    if impl.endswith("-captured"):  # whether its steps replayed a capture, or why not (Result.not_replayed)
        benchmark.extra_info.update(captured=not pipe._max_decoder.capture_refused,
                                    capture_error=pipe._max_decoder.capture_error)
    if pipe.decode_timer:  # the MAX decoder's own share of one transcription: calls and seconds (a GPU run had
        # summed them over the warm-up and 3 rounds: 1004 calls, 1.27 s beside a 0.67 s median)
        timer, n = pipe.decode_timer, len(results)
        benchmark.extra_info.update(decoder_calls=timer.calls // n, decoder_s=round(timer.seconds / n, 3))
    # The timed calls transcribed the clip. openai-whisper's float32 paths (PyTorch, MAX) give PyTorch's
    # text exactly; faster-whisper's own loop, and fp16 on a GPU, may move a word: measured WER
    # 0 for faster-whisper float32 and int8 on the fixture clips, bounded at 0.1. The MAX GPU paths are held
    # to the bound here and to openai-whisper's tokens by test_gpu_max_path_gives_the_reference_tokens, so
    # that a token flip there still leaves this run's timings (extra_info says whether the text was exact).
    want = cpu_transcript(CLIP.stem)["text"]  # openai-whisper's CPU text with the benchmark's settings
    benchmark.extra_info["exact_text"] = results[-1]["text"] == want
    if impl in ("cpu", "max", "max-encoder"):
        assert results[-1]["text"] == want
        assert 0 < timings["encode"] < benchmark.stats.stats.median
    else:
        assert word_error_rate(want, results[-1]["text"]) < 0.1
