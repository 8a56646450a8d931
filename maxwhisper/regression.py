"""The regression rule. Input: one figure per run for one case, oldest first (a drift-cancelled time ratio or
a memory peak, maxwhisper.results.Figure); smaller is better.

0. A case that ran while other processes used more than BUSY_SHARE of the machine's CPUs (and BUSY_SECONDS of
   CPU time), or more than BUSY_GPU_SM_PCT of its GPU's SMs, has its times left out of their history, and a busy latest run's times are reported as not judged: no partner or probe cancels a neighbour (the
   decoder step rose up to 12% beside a low-priority job whose load the GEMM probe never showed).
   A memory figure under MEMORY_FLOOR_MB is judged as that floor: its change is allocator pages, not a footprint.
1. Segment the case's whole history (log figures) into constant levels with ruptures' PELT change-point
   search (L2 cost). Its penalty is PENALTY x noise^2 x ln(runs), where noise is the robust (MAD) spread of
   run-to-run differences before the latest run, floored at NOISE_FLOOR.
2. A regression is a level that, with every level after it, stays above the best earlier level (of SETTLED
   runs or more) by more than the threshold. Slow drift adds up to one; a noisy night or two does not.
   A latest level above both the level before it and that best level, by the threshold, is a further step.
3. It belongs to this run while its first slow run is one of the last RECENT runs: called the night it
   lands, red for RECENT nights, then reported as persisting. Fewer than MIN_RUNS runs are not judged.
PENALTY (swept over 1.5, 2 and 3) and the thresholds (a GPU case's apart) were chosen with `python -m maxwhisper.nightly --calibrate`
on the committed real runs (docs/benchmarks.md), MIN_RUNS by the false alarms it left on them; RECENT is set, not calibrated.
"""
from __future__ import annotations

import functools
import math
import statistics
from dataclasses import dataclass

DEFAULT_THRESHOLD_PCT = 3.0  # a case timed round by round against its partner or probe (interleaved)
MEMORY_THRESHOLD_PCT = 3.0  # such a case's memory figures; `--threshold memory=PCT` overrides every memory figure
# (group, figure): the smallest of calibrate.THRESHOLD_GRID that is quiet (no false alarm in real order, and at most
# 2% of random orders of the clean runs called) on every committed set recorded as the nightly now runs (quiet
# runs, its current rounds), and gives no false alarm in real order on every other committed set (fixtures/
# bench_runs*; docs/benchmarks.md): the compile's wall time keeps the 20% that the loaded set needs. Cases timed
# in blocks of their own (the standard suite's) spread more than those read round by round against a partner;
# block-timed groups no set covers take the widest any of them needed.
THRESHOLDS_PCT: dict[tuple[str, str], float] = {
    ("encoder-paired", "time"): 7.5, ("decoder-paired", "time"): 5.0, ("decoder-paired", "cpu time"): 5.0,
    ("transcribe-every-path", "time"): 5.0, ("transcribe-every-path-beam5", "time"): 15.0,
    ("transcribe-every-path-beam5", "cpu time"): 10.0, ("transcribe-paired", "time"): 15.0,
    ("transcribe-paired", "cpu time"): 5.0, ("compile-paired", "time"): 20.0, ("compile-paired", "cpu time"): 10.0,
    ("decoder-step", "time"): 30.0, ("decoder-step", "peak host memory"): 3.0, ("decoder-prefill", "time"): 15.0,
    ("compile", "time"): 7.5, ("transcribe", "time"): 20.0, ("transcribe", "peak host memory"): 3.0,
    ("encoder-latency", "time"): 10.0, ("encoder-latency", "peak host memory"): 7.5, ("gemm-ceiling", "time"): 10.0}
BLOCK_THRESHOLD_PCT, BLOCK_MEMORY_PCT = 30.0, 7.5
# A GPU case's time (its device "gpu"), by (group, figure, whether the step is a replayed capture): 8 consecutive
# processes of the step benchmark on one H200 box (fixtures/bench_runs_h200_step8). The replayed steps are quiet at
# 20%. The launched ones, MAX's eager step and PyTorch's, wait on the host's launches: their medians moved 1.2-2.1x
# between those processes, and at 30% PyTorch's raised 3 false alarms on each of the 2 nights judged. None: charted,
# not judged (a kernel's regression shows in the replayed step, which runs the same kernels).
GPU_THRESHOLDS_PCT: dict[tuple[str, str, bool], float | None] = {
    ("decoder-step", "time", True): 20.0, ("decoder-step", "time", False): None}
PENALTY = 2.0
# Measured on the Zen 5 EPYC during decoder-paired: quiet runs 0-0.4%, beside a nice-19 job 5-28% (docs/benchmarks.md)
BUSY_SHARE = 0.02
# /proc/stat counts in 10 ms ticks: over a case of a fraction of a second a tick or two of kernel work reads as several
# percent (4-8% on the 0.1 s bf16 GEMM probe on a quiet machine), ten ticks do not
BUSY_SECONDS = 0.1
# Another process's kernels on the case's GPU (NVML's per-process SM samples, maxwhisper.paired.GpuNeighbours): any at
# all, since a GPU box running the nightly has no other work, and no run has measured a GPU neighbour's effect
BUSY_GPU_SM_PCT = 0.0
# A GPU step case's device memory is what it adds to the device after its setup: 0 MB in 32 of the 36 step cases
# of two H200 runs (2026-11-27), 4.0 MB in one (PyTorch's, both runs), the capture's pool in the first captured
# case. PyTorch's allocator reserves large blocks in 20 MB segments and NVML counts 2 MB pages, so such a figure
# moving by a segment or two is no regression, while a step that starts to take 500 MB is: judged as 64 MB or
# more (from 0 MB, a case is called at about 69 MB under the block-timed 7.5% memory threshold).
MEMORY_FLOOR_MB = 64.0
NOISE_FLOOR = 0.002  # 0.2%: memory figures can repeat exactly, and a zero spread would make any change a step
RECENT = 3
SETTLED = 3  # runs a level needs before it is a baseline: a two-night dip on real runs was one (docs/benchmarks.md)
MIN_RUNS = 7  # a week of nights: judged from 4 runs, a history that began with a two-night dip raised
# false alarms on real runs (fixtures/bench_runs_quiet, runs 4 to 6); from 7, none on either committed set


def busy(share: float | None, seconds: float | None, gpu_sm_pct: float | None = None) -> bool:
    """Whether other processes' CPU use (a share of the machine, and seconds where recorded) or GPU use (their
    highest SM utilization, percent) makes a run unjudgeable."""
    return ((share is not None and share > BUSY_SHARE and (seconds is None or seconds > BUSY_SECONDS))
            or (gpu_sm_pct is not None and gpu_sm_pct > BUSY_GPU_SM_PCT))


@dataclass(frozen=True)
class Call:
    regressed: bool
    change: float | None  # latest figure over the best level before the step (or the earlier median), minus 1
    rule: str
    since: int | None = None  # index of the step's first slow run


def threshold_pct(group: str, metric: str, overrides: dict[str, float] | None = None, interleaved: bool = True,
                  device: str = "cpu", replayed: bool = False) -> float | None:
    """The threshold of one figure: `--threshold GROUP=PCT` (its time figures) or `memory=PCT`, else calibrated for
    its group (on a GPU, for its group and whether it is `replayed`; None: not judged), else the default of its kind
    (an `interleaved` case, or one timed in a block of its own)."""
    overrides, memory = overrides or {}, "memory" in metric
    if (key := "memory" if memory else group) in overrides:
        return overrides[key]
    if device == "gpu" and (group, metric, replayed) in GPU_THRESHOLDS_PCT:
        return GPU_THRESHOLDS_PCT[(group, metric, replayed)]
    default = ((MEMORY_THRESHOLD_PCT if memory else DEFAULT_THRESHOLD_PCT) if interleaved
               else BLOCK_MEMORY_PCT if memory else BLOCK_THRESHOLD_PCT)
    return THRESHOLDS_PCT.get((group, metric), default)


@functools.lru_cache(maxsize=4096)
def segment_levels(values: tuple[float, ...], penalty: float, noise_floor: float) -> tuple[tuple, tuple]:
    """Step 1: the segments (start, end) of a history and each one's level (its median figure). They depend on the
    figures, not on a threshold, so a calibration's threshold sweep segments each history once (the 14 committed
    sets' calibrations 8.4 to 5.9 s on the Zen 4 EPYC, every call the same)."""
    import numpy as np
    import ruptures
    y = np.log(values)
    diffs = np.diff(y[:-1])
    noise = max(1.4826 * float(np.median(np.abs(diffs - np.median(diffs)))) / math.sqrt(2), noise_floor)
    ends = ruptures.Pelt(model="l2", min_size=1, jump=1).fit(y).predict(pen=penalty * noise**2 * math.log(len(y)))
    segments = tuple(zip([0] + ends[:-1], ends))
    return segments, tuple(math.exp(float(np.median(y[s:e]))) for s, e in segments)


def steps_up(values: list[float], threshold: float) -> list[tuple[int, float]]:
    """(first slow run, best level before it) of the upward step that the latest level still sits on."""
    segments, levels = segment_levels(tuple(values), PENALTY, NOISE_FLOOR)
    for i, (start, _) in enumerate(segments[1:], 1):
        settled = [level for (s, e), level in zip(segments[:i], levels) if e - s >= SETTLED]  # a dip is no level
        if settled and all(level > min(settled) * (1 + threshold) for level in levels[i:]):
            found = [(start, min(settled))]
            if i < len(segments) - 1 and levels[-1] > levels[-2] * (1 + threshold):  # levels[-2] is above min(settled)
                found.append((segments[-1][0], levels[-2]))  # a further step on top of an older one
            return found
    return []


def judge(values: list[float], threshold_pct: float = DEFAULT_THRESHOLD_PCT, detect=steps_up) -> Call:
    n = len(values)
    if n < MIN_RUNS:
        return Call(False, None, f"history too short ({n} of {MIN_RUNS} runs)")
    found = detect(values, threshold_pct / 100)
    if not found:
        return Call(False, values[-1] / statistics.median(values[:-1]) - 1, "no step up")
    since, before = found[-1]
    change = values[-1] / before - 1
    if since >= n - RECENT:
        return Call(True, change, f"step up {change:+.1%} from run {since + 1} of {n}", since)
    return Call(False, change, f"slower since run {since + 1} of {n} (no longer new)", since)
