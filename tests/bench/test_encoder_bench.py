"""Encoder latency and memory: MAX vs PyTorch on the same input in the same session.

On GPU the timed region ends when the device is done (MAX's accelerator and torch's CUDA stream are
synchronized inside it); warm-up rounds are excluded and compilation never happens in a timed round.
Memory is sampled in one separate, untimed call so the sampler cannot disturb the timings.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from maxwhisper import weights
from maxwhisper.encoder import get_encoder, max_device
from maxwhisper.memory import PeakMemory
from maxwhisper.metrics import encoder_flops
from maxwhisper.reference import torch_encoder
from tests.bench.conftest import FULL, ROUNDS, WARMUP, cpu_has_native_bf16

pytestmark = pytest.mark.bench
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MODELS = ["bundled"] + [f"random:{m}" for m in os.getenv("MAXWHISPER_BENCH_MODELS", "").split(",") if m]


def cases():
    """(impl, device, dtype, batch, model) for every case; GPU ones carry the gpu marker."""
    for model in MODELS:
        for device, dtypes, batches in (("cpu", ("float32", "bfloat16"), (1, 4)),
                                        ("gpu", ("float32", "bfloat16", "float16"), (1, 4, 8, 32))):
            for dtype in dtypes:
                for batch in batches:
                    for impl in ("torch", "max"):  # torch first: the max case records its ratio
                        marks = [pytest.mark.gpu] if device == "gpu" else []
                        if (impl, device, dtype) == ("torch", "cpu", "bfloat16") and not cpu_has_native_bf16():
                            marks.append(pytest.mark.skip(reason="no avx512_bf16/amx on this CPU: torch emulates "
                                                          "bf16 (measured 0.8 GFLOP/s, 7x slower than float32)"))
                        marks += [] if model == "bundled" or FULL else [pytest.mark.slow]
                        yield pytest.param(impl, device, dtype, batch, model, marks=marks,
                                           id=f"{impl}-{device}-{dtype}-b{batch}-{model.replace('random:', '')}")


_LOADED: dict[str, weights.LoadedModel] = {}


def loaded_model(source: str) -> weights.LoadedModel:
    if source not in _LOADED:
        _LOADED[source] = weights.load(source)
    return _LOADED[source]


def make_runner(impl: str, device: str, dtype: str, batch: int, loaded: weights.LoadedModel):
    """A zero-argument callable that encodes one batch and returns when the device is done."""
    mel = np.random.default_rng(0).uniform(-1.5, 1.5, (batch, loaded.dims.n_mels, 3000)).astype(np.float32)
    if impl == "max":
        from max.driver import Buffer
        encoder = get_encoder(loaded, device, dtype)  # compiled here, outside the timed rounds
        dev = max_device(device)
        buf = Buffer.from_numpy(mel).to(dev) if device == "gpu" else Buffer.from_numpy(mel)

        def run():
            out = encoder.model.execute(buf)
            dev.synchronize()
            return out
        return run
    torch_device = "cuda" if device == "gpu" else "cpu"
    module = torch_encoder(loaded, torch_device, TORCH_DTYPES[dtype])
    x = torch.from_numpy(mel).to(torch_device, TORCH_DTYPES[dtype])

    @torch.no_grad()
    def run():
        out = module(x)
        if device == "gpu":
            torch.cuda.synchronize()
        return out
    return run


@pytest.mark.parametrize("impl, device, dtype, batch, model", list(cases()))
def test_encoder_latency(benchmark, impl, device, dtype, batch, model):
    benchmark.group = "encoder-latency"
    loaded = loaded_model(model)
    run = make_runner(impl, device, dtype, batch, loaded)
    if device == "gpu":
        torch.cuda.reset_peak_memory_stats()
    with PeakMemory() as memory:
        run()
    benchmark.extra_info.update(impl=impl, device=device, dtype=dtype, batch=batch,
                                model="tiny.en" if model == "bundled" else model.split(":")[1],
                                flops=encoder_flops(loaded.dims, batch), **memory.as_extra_info())
    if device == "gpu":
        benchmark.extra_info["torch_max_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    out = benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=WARMUP, iterations=1)
    assert out is not None
    median = benchmark.stats.stats.median
    benchmark.extra_info["gflops"] = round(benchmark.extra_info["flops"] / median / 1e9, 1)
    # Sane figures: positive, and no faster than 2 TFLOP/s per CPU core or 2 PFLOP/s on a GPU.
    ceiling = 2e12 * (os.cpu_count() or 1) if device == "cpu" else 2e15
    assert 0 < median and benchmark.extra_info["flops"] / median < ceiling
    assert memory.peak_rss_mb >= memory.rss_baseline_mb > 0


@pytest.mark.gpu
@pytest.mark.parametrize("impl", ["torch", "max"])
def test_sync_overhead(benchmark, impl):
    """Cost of the synchronization alone, on an idle device: subtract it mentally from tiny latencies."""
    benchmark.group = "sync-overhead"
    sync = torch.cuda.synchronize if impl == "torch" else max_device("gpu").synchronize
    benchmark.extra_info.update(impl=impl, device="gpu")
    benchmark.pedantic(sync, rounds=50, warmup_rounds=5)


@pytest.mark.parametrize("dtype", ["float32", pytest.param("bfloat16", marks=pytest.mark.skipif(
    not cpu_has_native_bf16(), reason="no avx512_bf16/amx on this CPU: torch emulates bf16 at ~1 GFLOP/s"))])
def test_gemm_ceiling(benchmark, dtype):
    """This machine's GEMM rate (torch, 1536^3), the roofline the encoder's GFLOP/s is read against."""
    benchmark.group = "gemm-ceiling"
    n = 1536
    a, b = (torch.randn(n, n).to(TORCH_DTYPES[dtype]) for _ in range(2))
    benchmark.pedantic(torch.matmul, args=(a, b), rounds=ROUNDS, warmup_rounds=WARMUP)
    benchmark.extra_info.update(impl="torch", device="cpu", dtype=dtype, flops=2 * n**3,
                                gflops=round(2 * n**3 / benchmark.stats.stats.median / 1e9, 1))
    assert benchmark.extra_info["gflops"] > 0
