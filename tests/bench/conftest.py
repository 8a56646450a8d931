"""Benchmark machinery: machine context, quick vs full mode, the MAX/PyTorch ratio table.

Quick mode (the default, inside `make test`): CPU, tiny, few rounds, checks that figures are sane.
Full mode (`make bench`, MAXWHISPER_BENCH=full): more rounds, every case that applies to the machine.
"""
from __future__ import annotations

import importlib.metadata as md
import os
import platform
import re

import pytest

FULL = os.getenv("MAXWHISPER_BENCH") == "full"
ROUNDS, WARMUP = (10, 2) if FULL else (3, 1)


def gpu_info() -> dict:
    try:
        import pynvml
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        info = {"gpu_count": count, "driver_version": pynvml.nvmlSystemGetDriverVersion(),
                "cuda_version": pynvml.nvmlSystemGetCudaDriverVersion_v2()}
        if count:
            info["gpu_name"] = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
        return info
    except Exception:  # NVML absent: a CPU machine
        return {"gpu_count": 0}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return set(next(line for line in f if line.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        return set()


def cpu_has_native_bf16() -> bool:
    """avx512_bf16 or AMX: without them torch computes bfloat16 matmuls by emulation."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def machine_id() -> str:
    """Storage folder per hardware: runs from different CPUs or GPUs never compare silently."""
    from pytest_benchmark.utils import get_machine_id
    gpu = gpu_info().get("gpu_name", "nogpu")
    slug = re.sub(r"[^a-z0-9]+", "-", f"{cpu_model()}-{os.cpu_count()}c-{gpu}".lower()).strip("-")
    return f"{get_machine_id()}-{slug}"


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    session = getattr(config, "_benchmarksession", None)
    if session is not None:
        session.machine_id = session.storage.default_machine_id = machine_id()


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info.update(gpu_info())
    machine_info.update(cpu_model=cpu_model(), cpu_count=os.cpu_count(), machine_id=machine_id(),
                        cpu_simd=" ".join(sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma")))))
    for pkg in ("max", "torch", "openai-whisper"):
        machine_info[f"{pkg.replace('openai-', '')}_version"] = md.version(pkg)


def latency_results(config) -> dict[tuple, dict]:
    """Median seconds and extra_info of every encoder-latency case run so far, keyed by case."""
    session = getattr(config, "_benchmarksession", None)
    out = {}
    for bench in getattr(session, "benchmarks", []):
        info = bench.extra_info
        if bench.group == "encoder-latency" and bench.stats:
            key = (info["impl"], info["device"], info["dtype"], info["batch"], info["model"])
            out[key] = {"median": bench.stats.median, **info}
    return out


def ratio_rows(config) -> list[tuple]:
    """(device, dtype, batch, model, max ms, torch ms, max/torch, max GFLOP/s) per case run on both."""
    results = latency_results(config)
    rows = []
    for (impl, device, dtype, batch, model), r in sorted(results.items()):
        torch_r = results.get(("torch", device, dtype, batch, model)) or results.get(("torch", device, "float32", batch, model))
        if impl == "max" and torch_r:
            rows.append((device, dtype, batch, model, r["median"] * 1e3, torch_r["median"] * 1e3,
                         r["median"] / torch_r["median"], r["flops"] / r["median"] / 1e9))
    return rows


def pytest_terminal_summary(terminalreporter, config):
    rows = ratio_rows(config)
    if not rows:
        return
    tr = terminalreporter
    tr.section("MAX / PyTorch encoder latency (medians from this run)")
    tr.write_line(f"{'device':6} {'dtype':9} {'batch':>5} {'model':8} {'MAX ms':>9} {'torch ms':>9} "
                  f"{'MAX/torch':>9} {'MAX GFLOP/s':>11}")
    for device, dtype, batch, model, max_ms, torch_ms, ratio, gflops in rows:
        tr.write_line(f"{device:6} {dtype:9} {batch:>5} {model:8} {max_ms:9.1f} {torch_ms:9.1f} {ratio:9.3f} {gflops:11.1f}")
    ceilings = {b.extra_info["dtype"]: b.extra_info["gflops"] for b in config._benchmarksession.benchmarks
                if b.group == "gemm-ceiling" and b.stats}
    if ceilings:
        tr.write_line("GEMM ceiling measured in this run (torch, 1536^3): "
                      + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in sorted(ceilings.items())))
    tr.write_line("(torch row for a bfloat16 MAX case is torch float32 when torch bfloat16 was not run)")
