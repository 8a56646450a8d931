"""Drift-cancelling measurement: a case, its partner and a machine-speed probe, interleaved round by round.

On a shared 2-core machine whole runs shift by tens of percent (another job compiling, a noisy neighbour).
A shift that lasts longer than one round slows every member of the round alike, so the per-round ratio
`case / partner` (or `case / probe` for a case with no PyTorch partner) cancels it. PyTorch's own HUD
reports speedups the same way: a ratio against eager PyTorch measured on the same machine.

`benchmark.pedantic(case, setup=rounds.setup, ...)` runs the partner and the probe (timed here) right
before every timed round of the case; `rounds.extra_info(benchmark)` stores all three per-round series.
"""
from __future__ import annotations

import os
import time
from typing import Callable

PROBE_N = 1024  # torch fp32 GEMM, 2 x 1024^3: about 40 ms on these 2 cores, long enough to see contention
PROBE_VERSION = "torch-gemm-1024x2"  # a different probe is a different series: never compare across it


def probe() -> Callable[[], object]:
    """The fixed machine-speed probe: code this project never changes, with the encoder's kind of load."""
    import torch
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(PROBE_N, PROBE_N, generator=generator) for _ in range(2))

    def run():
        return torch.matmul(torch.matmul(a, b), b)
    return run


def busy_cpu_s() -> tuple[float, float] | None:
    """(CPU seconds all processes have used on this machine since boot, this process's own and its finished
    children's: a case that times a fresh process is no neighbour of itself), from /proc/stat; None without it."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal (guest time is already in user and nice): all but idle and
    # iowait. Steal counts: another virtual machine on the same cores is a neighbour too.
    busy = sum(fields[:8]) - sum(fields[3:5])
    own = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system + own.children_user + own.children_system


class GpuNeighbours:
    """The highest SM utilization (percent) NVML sampled for another process on the GPU this process uses
    (`memory.nvml_handle`) from creation to `measure()`: another job's kernels on the same GPU slow a case as a
    CPU neighbour does (regression.BUSY_GPU_SM_PCT). NVML samples each process that used the GPU in its sampling
    period, so a neighbour that ran briefly between samples can be missed. None where NVML cannot say: no GPU,
    no NVML, a driver or virtual GPU without per-process samples, or samples none of which is this process's
    (in a container NVML reports the host's process ids, so this process would look like a neighbour)."""

    def __init__(self, nvml=None):
        from maxwhisper.memory import nvml_handle
        self.handle = nvml_handle(nvml)
        if self.handle is not None and nvml is None:
            import pynvml as nvml
        self.nvml, self.since = nvml, int(time.time() * 1e6)  # NVML's samples are stamped in microseconds

    def measure(self) -> float | None:
        if self.handle is None:
            return None
        try:
            samples = self.nvml.nvmlDeviceGetProcessUtilization(self.handle, self.since)
        except self.nvml.NVMLError as exc:  # NOT_FOUND, or SUCCESS with no sample: no process ran kernels since;
            # anything else (NOT_SUPPORTED, ...): unknown
            return 0.0 if exc.value in (self.nvml.NVML_ERROR_NOT_FOUND, self.nvml.NVML_SUCCESS) else None
        own, recent = os.getpid(), [s for s in samples if s.timeStamp >= self.since]
        if recent and all(s.pid != own for s in recent):  # a GPU case ran kernels: its ids are not this namespace's
            return None
        return float(max((s.smUtil for s in recent if s.pid != own), default=0))


class Neighbours:
    """The share of the machine's CPU time that other processes used from creation to `measure()`, as a fraction of
    all its cores (calibrated on 2). A run beside another job is slower in ways no partner or probe cancels, so
    the nightly does not judge its times (regression.BUSY_SHARE). Another process on the GPU is GpuNeighbours';
    kernel threads working for this process (interrupts, reclaim) count as neighbours."""

    def __init__(self):
        self.start, self.wall = busy_cpu_s(), time.perf_counter()

    def measure(self) -> tuple[float, float] | None:
        """(share of the machine's CPU time, CPU seconds) other processes used so far; None without /proc/stat."""
        end = busy_cpu_s()
        if self.start is None or end is None:
            return None
        foreign = max(0.0, (end[0] - self.start[0]) - (end[1] - self.start[1]))
        return foreign / ((time.perf_counter() - self.wall) * (os.cpu_count() or 1)), foreign


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class Rounds:
    """Times the partner, any peers (further paths compared in the same rounds, wall time only) and the probe
    before each round of the case (warm-up rounds included, dropped later). Besides wall time it records the
    process's CPU time per call of case, partner and probe (all threads): work done, not time waited."""

    def __init__(self, partner: Callable[[], object] | None, probe_fn: Callable[[], object],
                 peers: dict[str, Callable[[], object]] | None = None):
        self.partner, self.probe, self.peers = partner, probe_fn, dict(peers or {})
        self.partner_s: list[float] = []
        self.probe_s: list[float] = []
        self.peer_s: dict[str, list[float]] = {name: [] for name in self.peers}
        self.cpu_s: dict[str, list[float]] = {"case": [], "partner": [], "probe": []}

    def cpu_timed(self, member: str, fn: Callable[[], object]) -> Callable[[], object]:
        def run():
            start = time.process_time()
            out = fn()
            self.cpu_s[member].append(time.process_time() - start)
            return out
        return run

    def case(self, fn: Callable[[], object]) -> Callable[[], object]:
        """`fn` with its CPU time recorded: pass this to benchmark.pedantic."""
        return self.cpu_timed("case", fn)

    def setup(self) -> None:
        if self.partner is not None:
            self.partner_s.append(timed(self.cpu_timed("partner", self.partner)))
        for name, peer in self.peers.items():  # further paths compared in the same rounds (wall time)
            self.peer_s[name].append(timed(peer))
        self.probe_s.append(timed(self.cpu_timed("probe", self.probe)))

    def extra_info(self, benchmark, normalisation: str, mode: str, partner_name: str = "") -> dict:
        """Per-round seconds of case, partner and probe, aligned: the last `rounds` of each list."""
        case_s = list(benchmark.stats.stats.data)
        n = len(case_s)
        info = {"normalisation": normalisation, "mode": mode, "probe": PROBE_VERSION,
                "rounds_s": {"case": [round(s, 6) for s in case_s],
                             "probe": [round(s, 6) for s in self.probe_s[-n:]]}}
        if self.partner is not None:
            info["rounds_s"]["partner"] = [round(s, 6) for s in self.partner_s[-n:]]
            info["partner"] = partner_name
        info["rounds_cpu_s"] = {member: [round(s, 6) for s in series[-n:]]
                                for member, series in self.cpu_s.items() if series}
        if self.peers:
            info["peers_s"] = {name: [round(s, 6) for s in series[-n:]] for name, series in self.peer_s.items()}
        return info
