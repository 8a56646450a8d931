"""Benchmark machinery: machine context, quick vs full mode, the MAX/PyTorch ratio table.

Quick mode (the default, inside `make test`): CPU, tiny, few rounds, checks that figures are sane.
Full mode (`make bench`, MAXWHISPER_BENCH=full): more rounds, every case that applies to the machine.
"""
from __future__ import annotations

import functools
import importlib.metadata as md
import os
import platform
import re
import time

import pytest

from maxwhisper.paired import GpuNeighbours, Neighbours

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


def cpu_generation(cpuinfo: str | None = None) -> str:
    """The CPU's family and model numbers ("f26m2"): the model name alone ("AMD EPYC") was the same on the CI
    machine's AVX2 EPYC (family 25) and its Zen 5 (family 26), whose runs must not form one series."""
    try:
        if cpuinfo is None:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        first = cpuinfo.split("\n\n")[0].splitlines()  # the first processor's block
        fields = dict(map(str.strip, line.split(":", 1)) for line in first if ":" in line)
        return f"f{fields['cpu family']}m{fields['model']}"
    except (OSError, KeyError):
        return platform.machine() or "unknown"


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return set(next(line for line in f if line.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        return set()


def cpu_has_native_bf16() -> bool:
    """avx512_bf16 or AMX: without them torch computes bfloat16 matmuls by emulation."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def torch_cuda() -> bool:
    from conftest import gpu_status
    return gpu_status().torch_cuda


@functools.cache
def gemm_ceiling_gflops(device: str) -> float:
    """The best dense GEMM rate on `device` (n = 1536, best of 5), over the dtypes that run natively:
    the ceiling no encoder timing can beat. torch where it can; on a GPU with a CPU-only torch, MAX."""
    import time
    import torch
    n, rates = 1536, []
    if device == "cpu" or torch_cuda():
        dev = "cuda" if device == "gpu" else "cpu"
        dtypes = [torch.float32] + ([torch.bfloat16] if device == "gpu" or cpu_has_native_bf16() else [])
        dtypes += [torch.float16] if device == "gpu" else []
        for dtype in dtypes:
            a, b = (torch.randn(n, n, device=dev).to(dtype) for _ in range(2))
            for _ in range(6):  # the first round warms up
                start = time.perf_counter()
                torch.matmul(a, b)
                if device == "gpu":
                    torch.cuda.synchronize()
                rates.append(2 * n**3 / (time.perf_counter() - start) / 1e9)
        return max(rates[1:])
    return _max_gpu_gemm_gflops(n)


def _max_gpu_gemm_gflops(n: int) -> float:
    """MAX's bfloat16 matmul on the GPU, synchronized, best of 5 (one small compile)."""
    import time
    from max.driver import Buffer
    from max.dtype import DType
    from max.engine import InferenceSession
    from max.graph import DeviceRef, Graph, TensorType, ops
    from maxwhisper.session import max_device
    dev = max_device("gpu")
    t = TensorType(DType.bfloat16, [n, n], DeviceRef.GPU())
    with Graph("gemm_ceiling", input_types=[t, t]) as graph:
        graph.output(ops.matmul(graph.inputs[0].tensor, graph.inputs[1].tensor))
    model = InferenceSession(devices=[dev]).load(graph)
    import torch
    x = Buffer.from_dlpack(torch.randn(n, n).to(torch.bfloat16)).to(dev)
    seconds = []
    for _ in range(6):
        start = time.perf_counter()
        model.execute(x, x)
        dev.synchronize()
        seconds.append(time.perf_counter() - start)
    return 2 * n**3 / min(seconds[1:]) / 1e9


def machine_id() -> str:
    """Storage folder per hardware: runs from different CPUs or GPUs never compare silently."""
    from pytest_benchmark.utils import get_machine_id
    gpu = gpu_info().get("gpu_name", "nogpu")
    slug = re.sub(r"[^a-z0-9]+", "-", f"{cpu_model()}-{cpu_generation()}-{os.cpu_count()}c-{gpu}".lower()).strip("-")
    return f"{get_machine_id()}-{slug}"


# The root conftest installs `machine_id` into pytest-benchmark before its pytest_configure runs.

# The merge-gate test (test_compare_workflow.py) adds this many seconds to every timed call, to prove that
# `--benchmark-compare-fail` catches a slowdown of the real benchmarks. A sleep lets a thread pool go cold (a
# 3.4 ms sleep after each 34 ms decoder-paired round slowed the rounds by 32%), so the nightly's real-run check
# (fixtures/bench_runs_zen5_decoder_slowed) spins instead: the same seconds of this thread's work after each call.
INJECTED_SLEEP_S = float(os.getenv("MAXWHISPER_BENCH_INJECT_SLEEP_S") or 0)
INJECTED_SPIN_S = float(os.getenv("MAXWHISPER_BENCH_INJECT_SPIN_S") or 0)


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@pytest.fixture
def benchmark(benchmark):
    """pytest-benchmark's fixture, recording the share of the CPUs other processes used during the case
    (`neighbours_cpu_share`: the nightly does not judge a busy run) and, for a GPU case, the most of the GPU's SMs
    another process used (`neighbours_gpu_sm_pct`, where NVML can say); under MAXWHISPER_BENCH_INJECT_SLEEP_S or
    _SPIN_S each timed call also sleeps or spins that long."""
    neighbours, gpu_neighbours = Neighbours(), GpuNeighbours()
    if INJECTED_SLEEP_S or INJECTED_SPIN_S:
        pedantic = benchmark.pedantic

        def slowed_pedantic(target, args=(), kwargs=None, **options):
            def slowed(*a, **k):
                out = target(*a, **k)
                if INJECTED_SLEEP_S:
                    time.sleep(INJECTED_SLEEP_S)
                _spin(INJECTED_SPIN_S)
                return out
            return pedantic(slowed, args, kwargs, **options)
        benchmark.pedantic = slowed_pedantic
    yield benchmark
    if (measured := neighbours.measure()) is not None:
        benchmark.extra_info.update(neighbours_cpu_share=round(measured[0], 4), neighbours_cpu_s=round(measured[1], 3))
    if benchmark.extra_info.get("device") == "gpu" and (gpu := gpu_neighbours.measure()) is not None:
        benchmark.extra_info.update(neighbours_gpu_sm_pct=gpu)


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info.update(gpu_info())
    # bench_mode: the nightly's series keep full and quick runs apart, also in a run without an interleaved case
    machine_info.update(cpu_model=cpu_model(), cpu_generation=cpu_generation(), cpu_count=os.cpu_count(),
                        machine_id=machine_id(), bench_mode="full" if FULL else "quick",
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


def decoder_summary(tr, config) -> None:
    """The decoder-step table (MAX / PyTorch and the bandwidth roofline) and the end-to-end table."""
    benches = [b for b in getattr(getattr(config, "_benchmarksession", None), "benchmarks", []) if b.stats]
    steps = {(b.extra_info["impl"], b.extra_info["device"], b.extra_info["batch"], b.extra_info["cache"]): b
             for b in benches if b.group == "decoder-step"}
    if any(k[0] == "max" for k in steps):
        tr.section("decoder step: MAX / PyTorch eager and the memory-bandwidth roofline (medians, this run)")
        tr.write_line(f"{'device':6} {'batch':>5} {'cache':>5} {'MAX ms':>8} {'torch ms':>8} {'MAX/torch':>9} "
                      f"{'GB/s':>6} {'floor ms':>8} {'of floor':>8} {'of best':>8}")
        # Each case's floor is read at the probe taken right after it; a probe that caught a slow moment of this
        # shared machine puts a case above 1 (seen on AMD EPYC Zen 5: probes of 40 to 66 GB/s within one run).
        # "of best" reads every case against the fastest probe of the run: the stricter roofline.
        best = {}
        for (impl, device, *_), b in steps.items():
            if b.extra_info["read_probe_gbps"] > 0:  # NaN where no probe ran (a GPU box with a CPU torch)
                best[device] = max(best.get(device, 0.0), b.extra_info["read_probe_gbps"])
        for (impl, device, batch, cache), b in sorted(steps.items()):
            torch_b = steps.get(("torch", device, batch, cache))
            if impl != "max":
                continue
            t_ms = f"{torch_b.stats.median * 1e3:8.2f}" if torch_b else f"{'-':>8}"
            ratio = f"{b.stats.median / torch_b.stats.median:9.3f}" if torch_b else f"{'-':>9}"
            x = b.extra_info
            tr.write_line(f"{device:6} {batch:>5} {cache:>5} {b.stats.median * 1e3:8.2f} {t_ms} {ratio} "
                          f"{x['achieved_gbps']:6.1f} {x['floor_ms']:8.2f} {x['roofline_fraction']:8.2f} "
                          f"{x['achieved_gbps'] / best.get(device, float('nan')):8.2f}")
    runs = {b.extra_info["impl"]: b for b in benches if b.group == "transcribe"}
    if "max" in runs:
        tr.section(f"transcription end to end: {runs['max'].extra_info['clip']} (medians, this run)")
        base = runs.get("cpu")
        for impl, b in sorted(runs.items(), key=lambda kv: kv[1].stats.median):
            rel = f"{b.stats.median / base.stats.median:6.3f} x cpu" if base else ""
            tr.write_line(f"{impl:24} {b.stats.median:7.2f} s  {b.extra_info['rtf']:6.1f}x real time  {rel}")


def pytest_terminal_summary(terminalreporter, config):
    decoder_summary(terminalreporter, config)
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
