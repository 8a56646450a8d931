"""Benchmark results: read pytest-benchmark runs, split them into series, and give each case its judged figures.

A series is one machine in one benchmark mode: storage folder, node, CPU, GPU, Python and mode (quick runs
from `make test`, full runs from `make nightly`) must all match. Each case yields up to three figures per run:
its time normalised for machine drift (see `Figure`), its peak host memory and its peak device memory.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import pathlib
import re
import statistics
from dataclasses import dataclass

from maxwhisper import regression

UNREADABLE = (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError)
RATIO_GROUP = "encoder-latency"
PROBE_CASE = "test_gemm_ceiling[float32]"  # the standard suite's own machine-speed figure, same run
MEMORY_KEYS = {"peak_rss_mb": "peak host memory", "peak_device_mb": "peak device memory"}


@dataclass(frozen=True)
class Machine:
    """Where and how a run was measured; runs form one series only when every field matches."""
    folder: str  # pytest-benchmark's per-machine storage folder, "" for a file at the top of the results
    node: str
    cpu: str
    gpu: str
    python: str
    mode: str = ""  # "full", "quick", or "" when the run does not say

    def same_hardware(self, other: Machine) -> bool:
        """Same node, CPU, GPU, Python and mode, wherever the file lies (a pinned baseline may live anywhere)."""
        return ((self.node, self.cpu, self.gpu, self.python, self.mode)
                == (other.node, other.cpu, other.gpu, other.python, other.mode))

    @property
    def _folder(self) -> str:
        return "" if self.folder == self.node else self.folder  # our machine_id names both

    @property
    def short(self) -> str:
        parts = (self.node, self._folder, self.mode and f"[{self.mode}]")
        return " ".join(part for part in parts if part) or self.label

    @property
    def label(self) -> str:
        parts = (self.node, self.gpu or self.cpu, self.python, self._folder, self.mode and f"{self.mode} runs")
        return " · ".join(part for part in parts if part)


@dataclass
class Result:
    """One benchmark case in one run, in seconds."""
    key: str
    name: str
    group: str
    median: float
    low: float
    high: float
    spread: float | None  # IQR/median, or stddev/median for files without an IQR
    data: list[float] | None
    extra: dict

    @property
    def gflops(self) -> float | None:
        flops = self.extra.get("flops")
        return flops / self.median / 1e9 if isinstance(flops, (int, float)) and flops > 0 else None

    def number(self, key: str) -> float | None:
        """A figure of extra_info (a memory peak, the neighbours' share, ...) as a float; None where absent."""
        value = self.extra.get(key)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    @property
    def neighbours_share(self) -> float | None:
        """The share of the CPUs other processes used while the case ran (runs from 2026-11-27 on; else None)."""
        return self.number("neighbours_cpu_share")

    @property
    def busy(self) -> bool:
        """Other processes used enough CPU or GPU while the case ran that its times are not judged (regression.busy)."""
        return regression.busy(self.neighbours_share, self.number("neighbours_cpu_s"), self.number("neighbours_gpu_sm_pct"))

    @property
    def busy_reason(self) -> str | None:
        """What made the case busy (regression.busy's CPU half, its GPU half or both), in words; None when it
        was not."""
        reasons = []
        if regression.busy(self.neighbours_share, self.number("neighbours_cpu_s")):
            reasons.append(f"other processes used {self.neighbours_share:.0%} of the CPUs during this run (limit "
                           f"{regression.BUSY_SHARE:.0%})")
        if regression.busy(None, None, gpu := self.number("neighbours_gpu_sm_pct")):
            reasons.append(f"another process used up to {gpu:g}% of the GPU's SMs during this run (limit "
                           f"{regression.BUSY_GPU_SM_PCT:g}%)")
        return "; ".join(reasons) or None

    @property
    def replays(self) -> bool:
        """Whether the case's steps are meant to replay a captured device graph (its impl ends in -captured)."""
        return str(self.extra.get("impl", "")).endswith("-captured")

    @property
    def not_replayed(self) -> str | None:
        """Why a `-captured` case's steps were launched one by one instead of replaying their capture (it recorded
        `captured` false: the capture failed); None where they replayed, or the run does not say."""
        if not self.replays or self.extra.get("captured") is not False:
            return None
        why = (str(self.extra.get("capture_error") or "").strip().splitlines() or ["no reason recorded"])[0]
        return f"its steps were launched, not replayed: the capture failed ({why})"

    @property
    def wrong_text(self) -> str | None:
        """Why a MAX transcription case's text is a failure: it recorded `exact_text` false, where openai-whisper's
        float32 text is what every MAX path must give (the benchmark keeps such a run's timings, bounded by its word
        error rate); None otherwise, and for PyTorch's float16 and faster-whisper, which may move a word."""
        if not str(self.extra.get("impl", "")).startswith("max") or self.extra.get("exact_text") is not False:
            return None
        return "the transcript differs from openai-whisper's float32 text; `pytest -m gpu tests/parity` names the step"

    def threshold_pct(self, metric: str, overrides: dict[str, float] | None = None,
                      interleaved: bool = True) -> float | None:
        """regression.threshold_pct of this case's `metric`: on a GPU, by whether its step replays a capture (its
        impl; a run whose capture failed is not judged at all: not_replayed)."""
        return regression.threshold_pct(self.group, metric, overrides, interleaved, str(self.extra.get("device", "cpu")),
                                        self.replays)

    def left_out(self, metric: str) -> str | None:
        """Why the nightly leaves this run's `metric` out of the case's history, or None: a busy run's times (a
        neighbour moves this process's times, not its memory), and every figure of a captured case whose steps
        were not replayed (they measured the launched step)."""
        return "not replayed" if self.not_replayed else None if "memory" in metric or not self.busy else "busy"

    def rounds(self, member: str, clock: str = "rounds_s") -> list[float] | None:
        """Per-round seconds of "case", "partner" or "probe" from an interleaved benchmark (maxwhisper.paired),
        wall time ("rounds_s") or the process's CPU time ("rounds_cpu_s")."""
        table = self.extra.get(clock)
        series = table.get(member) if isinstance(table, dict) else None
        if not isinstance(series, list) or not series or not all(isinstance(s, (int, float)) and s > 0 for s in series):
            return None
        return [float(s) for s in series]


@dataclass
class Run:
    """One saved pytest-benchmark run."""
    path: pathlib.Path
    machine: Machine
    info: dict
    commit: str
    when: dt.datetime
    results: dict[str, Result]

    @property
    def short(self) -> str:
        return self.commit[:7]


def _number(stats: dict, key: str, required: bool = True) -> float | None:
    value = stats.get(key)
    if value is None and not required:
        return None
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"stats.{key} is {value}")
    return value


def parse_result(bench: dict) -> Result:
    """A benchmarks[] entry of any pytest-benchmark version (stats were flat in the entry before 3.0)."""
    stats = bench.get("stats", bench)
    median, low, high = (_number(stats, key) for key in ("median", "min", "max"))
    if median <= 0:
        raise ValueError("stats.median is 0")
    iqr = _number(stats, "iqr", required=False)
    if iqr is None and "q1" in stats and "q3" in stats:
        iqr = _number(stats, "q3") - _number(stats, "q1")
    stddev = _number(stats, "stddev", required=False)
    spread = iqr if iqr is not None else stddev
    data = stats.get("data")
    data = [float(x) for x in data] if isinstance(data, list) and len(data) > 1 else None
    name = str(bench.get("name") or bench["fullname"])
    extra = bench.get("extra_info")
    return Result(key=str(bench.get("fullname") or name), name=name, group=str(bench.get("group") or ""),
                  median=median, low=low, high=high, spread=None if spread is None else spread / median,
                  data=data, extra=extra if isinstance(extra, dict) else {})


def _when(doc: dict, path: pathlib.Path) -> dt.datetime:
    """The run's time: its `datetime`, else the commit time, else the autosave name, else the file's mtime."""
    commit = doc.get("commit_info") or {}
    for text in (doc.get("datetime"), commit.get("time"), commit.get("author_time")):
        try:
            when = dt.datetime.fromisoformat(str(text))
        except ValueError:
            continue
        return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)
    stamp = re.search(r"_(\d{8}_\d{6})", path.name)
    if stamp:
        return dt.datetime.strptime(stamp.group(1), "%Y%m%d_%H%M%S").replace(tzinfo=dt.timezone.utc)
    return dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc)


def _mode(info: dict, results: dict[str, Result]) -> str:
    """The benchmark mode: machine_info's bench_mode, else the one every case that says agrees on."""
    if info.get("bench_mode"):
        return str(info["bench_mode"])
    modes = {str(r.extra["mode"]) for r in results.values() if r.extra.get("mode")}
    return modes.pop() if len(modes) == 1 else ""


def _machine(info: dict, path: pathlib.Path, root: pathlib.Path | None, mode: str) -> Machine:
    cpu = info.get("cpu")
    cpu = cpu.get("brand_raw") or cpu.get("brand") if isinstance(cpu, dict) else cpu
    python = " ".join(str(info.get(k, "")) for k in ("python_implementation", "python_version")).strip()
    # Our benchmarks record a hardware machine_id; prefer it to the host name, which CI runners change.
    node = str(info.get("machine_id") or info.get("node", ""))
    return Machine(folder="" if path.parent == root else path.parent.name, node=node,
                   cpu=str(info.get("cpu_model") or cpu or info.get("processor") or ""),
                   gpu=str(info.get("gpu_name") or ""), python=".".join(python.split(".")[:2]), mode=mode)


def parse_run(path: pathlib.Path, root: pathlib.Path | None = None) -> Run:
    """Read one saved run; raises one of UNREADABLE for anything that is not a usable run."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list):
        raise ValueError("not a pytest-benchmark run (no benchmarks list)")
    if not doc["benchmarks"]:
        raise ValueError("the run holds no benchmarks")
    info = doc.get("machine_info") if isinstance(doc.get("machine_info"), dict) else {}
    commit = doc.get("commit_info") or {}
    results = {result.key: result for result in map(parse_result, doc["benchmarks"])}
    return Run(path, _machine(info, path, root, _mode(info, results)), info, str(commit.get("id") or "unknown"),
               _when(doc, path), results)


def why(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:160]


def load_runs(results: pathlib.Path) -> tuple[list[Run], list[tuple[pathlib.Path, str]]]:
    """Every readable run under `results`, and (file, reason) for each JSON file that could not be used."""
    runs, skipped = [], []
    for path in sorted(results.rglob("*.json")):
        try:
            runs.append(parse_run(path, results))
        except UNREADABLE as exc:
            skipped.append((path, why(exc)))
    return runs, skipped


def split_series(runs: list[Run]) -> dict[Machine, list[Run]]:
    """Runs per machine and mode, oldest first."""
    series: dict[Machine, list[Run]] = {}
    for run in sorted(runs, key=lambda r: (r.when, r.path.name)):
        series.setdefault(run.machine, []).append(run)
    return series


# --- the figures the rules judge ----------------------------------------------------------------

@dataclass(frozen=True)
class Figure:
    """One number per run for one case: smaller is better, drift cancelled as far as the run allows."""
    value: float
    normalisation: str  # "partner (interleaved)", "probe (interleaved)", "partner (same run)", ...
    unit: str
    floor: float = 0.0  # judged as at least this (regression.MEMORY_FLOOR_MB for memory)

    @property
    def judged(self) -> float:
        """The value the regression rule reads: a memory figure under its floor counts as the floor."""
        return max(self.value, self.floor)

    @property
    def interleaved(self) -> bool:
        """Read against a partner or probe timed round by round with the case (else a same-run median, or raw)."""
        return "interleaved" in self.normalisation


def partner(run: Run, result: Result) -> Result | None:
    """The same encoder-latency case on the other implementation (MAX <-> PyTorch) in `run`; for a
    reduced-precision case with no same-dtype partner (torch bf16 skipped on CPUs without it), float32."""
    other = {"max": "torch", "torch": "max"}.get(result.extra.get("impl"))
    candidates = [r for r in run.results.values() if result.group == RATIO_GROUP == r.group
                  and r.extra.get("impl") == other
                  and all(r.extra.get(f) == result.extra.get(f) for f in ("device", "batch", "model"))]
    for dtype in (result.extra.get("dtype"), "float32"):
        match = next((r for r in candidates if r.extra.get("dtype") == dtype), None)
        if match is not None:
            return match
    return None


# 10% of the rounds from each tail. Run-to-run spread (std) of the CPU-time figure over the 20 committed 30-round
# runs: 1.8% with it, 1.9% with 25%, 2.0% untrimmed, 2.3% for the median (fixtures/bench_runs_30rounds, docs/benchmarks.md)
TRIM = 0.1


def ratio_of_minima(case: list[float], other: list[float]) -> float:
    """The least-disturbed round of each: contention only ever adds time."""
    return min(case) / min(other)


def median_round_ratio(case: list[float], other: list[float]) -> float:
    return statistics.median(c / o for c, o in zip(case, other))


def trimmed_round_ratio(case: list[float], other: list[float], cut: float = TRIM) -> float:
    """The geometric mean of the per-round ratios with the `cut` share of each tail left out: near the mean's
    efficiency on the middle of the rounds, and as deaf as the median to a round a neighbour disturbed."""
    from scipy import stats
    return math.exp(stats.trim_mean([math.log(c / o) for c, o in zip(case, other)], cut))


ESTIMATORS = {"ratio of minima": ("rounds_s", ratio_of_minima),
              "median per-round ratio": ("rounds_s", median_round_ratio),
              "trimmed mean per-round ratio": ("rounds_s", trimmed_round_ratio),
              "CPU-time ratio of minima": ("rounds_cpu_s", ratio_of_minima),
              "CPU-time median per-round ratio": ("rounds_cpu_s", median_round_ratio),
              "CPU-time trimmed mean per-round ratio": ("rounds_cpu_s", trimmed_round_ratio)}
# Chosen by calibration on the committed real runs (docs/benchmarks.md): the fewest false alarms in real order.
ESTIMATOR, CPU_ESTIMATOR = "median per-round ratio", "CPU-time trimmed mean per-round ratio"


def time_figure(run: Run, result: Result, estimator: str = ESTIMATOR) -> Figure:
    """Interleaved rounds: the ratio to the partner, else to the probe, by `estimator`. Otherwise a MAX
    encoder case over its PyTorch partner's median in the same run, else over the run's GEMM probe,
    else the raw median (nothing in the run measured the machine)."""
    clock, ratio = ESTIMATORS[estimator]
    case = result.rounds("case", clock)
    for member in ("partner", "probe"):
        other = result.rounds(member, clock)
        if case and other and len(other) == len(case):
            return Figure(ratio(case, other), f"{member} (interleaved{', CPU time' * (clock == 'rounds_cpu_s')})", "×")
    mate = partner(run, result) if result.extra.get("impl") == "max" else None
    if mate is not None:
        return Figure(result.median / mate.median, "PyTorch partner (same run)", "×")
    probe = next((r for r in run.results.values() if r.name == PROBE_CASE), None)
    if probe is not None and probe is not result:
        return Figure(result.median / probe.median, "GEMM probe (same run)", "×")
    return Figure(result.median, "none (raw seconds)", "s")


def figures(run: Run, result: Result, estimator: str = ESTIMATOR) -> dict[str, Figure]:
    """Every judged figure of a case in one run: "time" (wall clock), "cpu time" where the rounds recorded the
    process's CPU time (drift cancels better; a loss of parallelism shows only in wall time), and memory."""
    out = {"time": time_figure(run, result, estimator)}
    cpu = time_figure(run, result, CPU_ESTIMATOR)
    if "CPU time" in cpu.normalisation:
        out["cpu time"] = cpu
    for key, label in MEMORY_KEYS.items():  # 0 MB too: a GPU case's device memory above its start often is
        if result.number(key) is not None:
            out[label] = Figure(result.number(key), "none (MB)", "MB", regression.MEMORY_FLOOR_MB)
    return out
