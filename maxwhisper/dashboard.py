"""Benchmark history: read pytest-benchmark runs, call regressions, render one self-contained HTML page.

`python -m maxwhisper dashboard [RESULTS_DIR] -o report.html [--baseline FILE] [--threshold GROUP=PCT]
[--github-json FILE]`. Every machine is its own series (storage folder, node, CPU, GPU and Python must all
match). A case regresses only when its median slowdown exceeds the group's threshold (default 10%) AND
the slowdown is beyond noise: a one-sided Mann-Whitney U test on the saved rounds (p < 0.01) when both
runs have enough rounds for the test to reach that, else 3x the relative spread of its previous runs.
An encoder-latency slowdown that its PyTorch (or MAX) partner shared in the same runs is machine drift:
it stands only if the MAX/PyTorch ratio moved beyond the threshold too.
"""
from __future__ import annotations

import datetime as dt
import html
import json
import math
import pathlib
import re
import statistics
import sys
from dataclasses import dataclass

from maxwhisper.errors import MaxWhisperError

DEFAULT_THRESHOLD_PCT = 10.0
SIGNIFICANCE = 0.01
NOISE_MULTIPLE = 3.0
RATIO_GROUP = "encoder-latency"
UNREADABLE = (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError)
PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4d7c0f", "#be185d")
MACHINE_DETAILS = ("cpu_model", "cpu_count", "gpu_name", "gpu_count", "cuda_version", "driver_version",
                   "max_version", "torch_version", "whisper_version")


# --- loading ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Machine:
    """Where a run was measured; runs form one series only when every field matches."""
    folder: str  # pytest-benchmark's per-machine storage folder, "" for a file at the top of the results
    node: str
    cpu: str
    gpu: str
    python: str

    def same_hardware(self, other: Machine) -> bool:
        """Same node, CPU, GPU and Python, wherever the file lies (a pinned baseline may live anywhere)."""
        return (self.node, self.cpu, self.gpu, self.python) == (other.node, other.cpu, other.gpu, other.python)

    @property
    def short(self) -> str:
        return " ".join(part for part in (self.node, self.folder) if part) or self.label

    @property
    def label(self) -> str:
        return " · ".join(part for part in (self.node, self.gpu or self.cpu, self.python, self.folder) if part)


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

    def memory(self, key: str) -> float | None:
        value = self.extra.get(key)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


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


def _machine(info: dict, path: pathlib.Path, root: pathlib.Path | None) -> Machine:
    cpu = info.get("cpu")
    cpu = cpu.get("brand_raw") or cpu.get("brand") if isinstance(cpu, dict) else cpu
    python = " ".join(str(info.get(k, "")) for k in ("python_implementation", "python_version")).strip()
    # Our benchmarks record a hardware machine_id; prefer it to the host name, which CI runners change.
    node = str(info.get("machine_id") or info.get("node", ""))
    return Machine(folder="" if path.parent == root else path.parent.name, node=node,
                   cpu=str(info.get("cpu_model") or cpu or info.get("processor") or ""),
                   gpu=str(info.get("gpu_name") or ""), python=".".join(python.split(".")[:2]))  # "CPython 3.11"


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
    return Run(path, _machine(info, path, root), info, str(commit.get("id") or "unknown"), _when(doc, path), results)


def _why(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:160]


def load_runs(results: pathlib.Path) -> tuple[list[Run], list[tuple[pathlib.Path, str]]]:
    """Every readable run under `results`, and (file, reason) for each JSON file that could not be used."""
    runs, skipped = [], []
    for path in sorted(results.rglob("*.json")):
        try:
            runs.append(parse_run(path, results))
        except UNREADABLE as exc:
            skipped.append((path, _why(exc)))
    return runs, skipped


# --- regression rules ---------------------------------------------------------------------------

@dataclass
class Verdict:
    """One comparison of a case's latest median against a reference run."""
    change: float | None  # +0.2 means 20% slower than the reference
    regressed: bool
    rule: str
    reference: str = ""  # short commit id of the reference run


def _rank_test_can_decide(new: list[float] | None, old: list[float] | None) -> bool:
    """Both runs saved rounds, enough of them that the exact one-sided test can reach p < SIGNIFICANCE."""
    return bool(new and old) and 1 / math.comb(len(new) + len(old), len(new)) < SIGNIFICANCE


def judge(new: Result, old: Result | None, history: list[Result], threshold_pct: float,
          reference: str = "", missing: str = "no previous run") -> Verdict:
    """Regressed only if the median slowdown beats the threshold and is beyond the case's noise."""
    if old is None:
        return Verdict(None, False, missing)
    change = new.median / old.median - 1
    if change * 100 <= threshold_pct:
        return Verdict(change, False, "below threshold", reference)
    if _rank_test_can_decide(new.data, old.data):
        from scipy.stats import mannwhitneyu
        p = float(mannwhitneyu(new.data, old.data, alternative="greater").pvalue)
        return Verdict(change, p < SIGNIFICANCE, f"mann-whitney p={p:.2g}", reference)
    spreads = [r.spread for r in history if r.spread is not None]
    noise = statistics.median(spreads) if spreads else 0.0
    return Verdict(change, change > NOISE_MULTIPLE * noise, f"noise-band {NOISE_MULTIPLE:g}x{noise:.1%}", reference)


@dataclass
class Row:
    """A case on one machine: its history (oldest first) and its latest result judged."""
    machine: Machine
    history: list[tuple[Run, Result]]
    threshold_pct: float
    vs_previous: Verdict
    vs_baseline: Verdict | None

    @property
    def run(self) -> Run:
        return self.history[-1][0]

    @property
    def latest(self) -> Result:
        return self.history[-1][1]

    @property
    def regressed(self) -> bool:
        return any(v.regressed for v in self.verdicts)

    @property
    def verdicts(self) -> list[Verdict]:
        return [self.vs_previous] + ([self.vs_baseline] if self.vs_baseline else [])

    @property
    def rule(self) -> str:
        """The rule that decided: the regressing comparison's, else every comparison's."""
        named = [("", self.vs_previous)] + ([("baseline: ", self.vs_baseline)] if self.vs_baseline else [])
        deciding = [(tag, v) for tag, v in named if v.regressed] or named
        if len(deciding) > 1 and len({v.rule for _, v in deciding}) == 1:
            return deciding[0][1].rule  # both comparisons decided alike
        return "; ".join(tag + v.rule for tag, v in deciding)

    @property
    def worst(self) -> float:
        return max((v.change for v in self.verdicts if v.change is not None), default=-math.inf)


@dataclass
class Report:
    series: dict[Machine, list[Run]]  # each machine's runs, oldest first
    rows: list[Row]  # worst first
    skipped: list[tuple[pathlib.Path, str]]
    baseline: Run | None
    notes: list[str]
    source: pathlib.Path

    @property
    def regressions(self) -> list[Row]:
        return [row for row in self.rows if row.regressed]


def parse_thresholds(specs: list[str] | None) -> dict[str, float]:
    """["encoder-latency=10", ...] -> {"encoder-latency": 10.0}."""
    thresholds = {}
    for spec in specs or ():
        group, _, pct = spec.partition("=")
        try:
            value = float(pct.strip().rstrip("%"))
        except ValueError:
            value = math.nan
        if not group.strip() or not value >= 0:
            raise MaxWhisperError(f"--threshold {spec!r}: expected GROUP=PCT with PCT >= 0, e.g. encoder-latency=10")
        thresholds[group.strip()] = value
    return thresholds


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


def discount_drift(verdict: Verdict, new_run: Run, new: Result, old_run: Run | None, threshold_pct: float) -> Verdict:
    """A slowdown shared by the PyTorch partner measured in the same runs is the machine, not the code:
    the call stands only if the MAX/PyTorch ratio also moved beyond the threshold."""
    if not verdict.regressed or old_run is None or old_run.results.get(new.key) is None:
        return verdict
    mate_new, mate_old = partner(new_run, new), partner(old_run, old_run.results[new.key])
    if mate_new is None or mate_old is None:
        return verdict
    mate_change = mate_new.median / mate_old.median - 1
    if ((1 + verdict.change) / (1 + mate_change) - 1) * 100 > threshold_pct:
        return verdict
    return Verdict(verdict.change, False, f"machine drift: {mate_new.extra.get('impl')} moved {mate_change:+.1%} "
                   f"in the same runs ({verdict.rule})", verdict.reference)


def _case_rows(machine: Machine, runs: list[Run], baseline: Run | None, thresholds: dict[str, float]) -> list[Row]:
    rows = []
    for key in dict.fromkeys(key for run in runs for key in run.results):
        history = [(run, run.results[key]) for run in runs if key in run.results]
        (run, new), earlier = history[-1], [result for _, result in history[:-1]]
        threshold = thresholds.get(new.group, DEFAULT_THRESHOLD_PCT)
        if run is not runs[-1]:
            previous = Verdict(None, False, f"not in the latest run (last seen {run.short})")
        else:
            previous = discount_drift(judge(new, earlier[-1] if earlier else None, earlier, threshold,
                                            history[-2][0].short if earlier else ""),
                                      run, new, history[-2][0] if earlier else None, threshold)
        against_baseline = (discount_drift(judge(new, baseline.results.get(key), earlier, threshold, baseline.short,
                                                 missing="not in baseline"), run, new, baseline, threshold)
                            if baseline else None)
        rows.append(Row(machine, history, threshold, previous, against_baseline))
    return rows


def build_report(results: pathlib.Path, baseline: str | None = None,
                 thresholds: dict[str, float] | None = None) -> Report:
    """Load every run under `results`, split them by machine and judge each machine's latest results."""
    thresholds = thresholds or {}
    if not results.is_dir():
        raise MaxWhisperError(f"results directory {results} does not exist; run `make bench` first or pass RESULTS_DIR")
    runs, skipped = load_runs(results)
    if not runs:
        raise MaxWhisperError(f"no readable pytest-benchmark runs under {results} "
                              f"({len(skipped)} unreadable JSON files)")
    pinned = None
    if baseline:
        try:
            pinned = parse_run(pathlib.Path(baseline))
        except UNREADABLE as exc:
            raise MaxWhisperError(f"--baseline {baseline} is not a readable pytest-benchmark run "
                                  f"({_why(exc)})") from None
    series: dict[Machine, list[Run]] = {}
    for run in sorted(runs, key=lambda r: (r.when, r.path.name)):
        series.setdefault(run.machine, []).append(run)
    rows = [row for machine, machine_runs in series.items()
            for row in _case_rows(machine, machine_runs,
                                  pinned if pinned and pinned.machine.same_hardware(machine) else None, thresholds)]
    rows.sort(key=lambda row: (not row.regressed, -row.worst, row.machine.label, row.latest.key))
    notes = []
    if pinned and not any(pinned.machine.same_hardware(machine) for machine in series):
        notes.append(f"baseline {baseline} was measured on {pinned.machine.label}, which matches no machine here")
    groups = {row.latest.group for row in rows}
    notes += [f"--threshold {group}=...: no benchmark is in group {group!r}"
              for group in thresholds if group not in groups]
    return Report(series, rows, skipped, pinned, notes, results)


# --- text and JSON outputs ----------------------------------------------------------------------

def _pct(change: float | None) -> str:
    return "—" if change is None else f"{0.0 if abs(change) < 0.0005 else change:+.1%}"


def summary_text(report: Report) -> str:
    """One line per case, worst first, naming the rule that decided it."""
    n = len(report.regressions)
    skipped = f", {len(report.skipped)} unreadable file(s) skipped" if report.skipped else ""
    lines = [f"{len(report.rows)} cases on {len(report.series)} machine(s): {n} regression{'s' * (n != 1)}{skipped}"]
    for row in report.rows:  # plain ASCII: a nightly log may not be UTF-8
        change = row.vs_previous
        versus = f"{_pct(change.change)} vs {change.reference}" if change.change is not None else ""
        lines.append(f"{'REGRESSED' if row.regressed else 'ok':9} {versus:18} {row.latest.name} "
                     f"[{row.latest.group or 'no group'}] on {row.machine.short}: {row.rule}")
    return "\n".join(lines)


def github_benchmarks(report: Report) -> list[dict]:
    """github-action-benchmark `customSmallerIsBetter` entries for each machine's latest run."""
    several = len(report.series) > 1
    entries = []
    for row in report.rows:
        if row.run is not report.series[row.machine][-1]:
            continue
        result, where = row.latest, f" @ {row.machine.short}" if several else ""
        name = f"{result.group + '/' if result.group else ''}{result.name}{where}"
        spread = f"± {result.spread * result.median * 1e3:.3g}" if result.spread is not None else None
        entries.append({"name": name, "unit": "ms", "value": round(result.median * 1e3, 6),
                        **({"range": spread} if spread else {}),
                        "extra": f"commit {row.run.short}; {row.rule}"})
        for key, label in (("peak_rss_mb", "peak host memory"), ("peak_device_mb", "peak device memory")):
            if result.memory(key) is not None:
                entries.append({"name": f"{name} {label}", "unit": "MB", "value": result.memory(key),
                                "extra": f"commit {row.run.short}"})
    return entries


# --- SVG charts ---------------------------------------------------------------------------------

@dataclass
class Line:
    label: str
    values: list[float | None]
    color: str
    dashed: bool = False


def _nice_step(span: float) -> float:
    magnitude = 10 ** math.floor(math.log10(span))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= span)


def _g(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def _segments(points: list[tuple[float, float] | None]) -> list[list[tuple[float, float]]]:
    """Split a line at missing values so a gap is drawn as a gap."""
    segments, current = [], []
    for point in points + [None]:
        if point is not None:
            current.append(point)
        elif current:
            segments.append(current)
            current = []
    return segments


def svg_chart(title: str, ticks: list[str], lines: list[Line], unit: str,
              band: tuple[list[float | None], list[float | None]] | None = None, ref: float | None = None,
              width: int = 640, height: int = 250) -> str:
    """A line chart over runs (x: one tick per run), y from 0, with an optional shaded band and reference line."""
    left, right, top, bottom, inset = 70, 14, 30, 46, 34  # inset keeps the first and last x labels inside
    plot_w, plot_h = width - left - right - 2 * inset, height - top - bottom
    values = [v for line in lines for v in line.values if v is not None]
    values += [v for v in (band[1] if band else []) if v is not None] + ([ref] if ref is not None else [])
    step = _nice_step(max(values, default=1.0) / 4 or 1.0)
    y_top = step * max(1, math.ceil(max(values, default=1.0) * 1.05 / step))
    n = len(ticks)

    def x(i: int) -> float:
        return left + inset + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    def y(v: float) -> float:
        return top + plot_h * (1 - v / y_top)

    def xy(i: int, v: float | None) -> tuple[float, float] | None:
        return None if v is None else (x(i), y(v))

    def pts(points) -> str:
        return " ".join(f"{px:.1f},{py:.1f}" for px, py in points)

    out = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
           f'aria-label="{html.escape(title)}"><text class="title" x="{left}" y="18">{html.escape(title)}</text>']
    for k in range(int(round(y_top / step)) + 1):
        gy = y(k * step)
        out.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{gy:.1f}" y2="{gy:.1f}"/>'
                   f'<text class="ylab" x="{left - 6}" y="{gy + 4:.1f}">{_g(k * step)} {html.escape(unit)}</text>')
    if band:
        for low, high in zip(_segments([xy(i, v) for i, v in enumerate(band[0])]),
                             _segments([xy(i, v) for i, v in enumerate(band[1])])):
            out.append(f'<polygon class="band" points="{pts(low + high[::-1])}"><title>min–max</title></polygon>')
    if ref is not None:
        out.append(f'<line class="ref" x1="{left}" x2="{width - right}" y1="{y(ref):.1f}" y2="{y(ref):.1f}"/>')
    every = max(1, math.ceil(n / 10))
    for i, tick in enumerate(ticks):
        if i % every == 0 or i == n - 1:
            commit, _, date = tick.partition(" ")
            out.append(f'<text class="xlab" x="{x(i):.1f}" y="{height - bottom + 16}">{html.escape(commit)}'
                       f'<tspan x="{x(i):.1f}" dy="13">{html.escape(date)}</tspan></text>')
    for line in lines:
        dash = ' stroke-dasharray="5 4"' if line.dashed else ""
        for segment in _segments([xy(i, v) for i, v in enumerate(line.values)]):
            out.append(f'<polyline class="line" data-series="{html.escape(line.label)}" stroke="{line.color}"{dash} '
                       f'points="{pts(segment)}"/>')
        out += [f'<circle class="pt" cx="{x(i):.1f}" cy="{y(v):.1f}" r="3" fill="{line.color}"><title>'
                f'{html.escape(f"{line.label}: {_g(v)} {unit} at {ticks[i]}")}</title></circle>'
                for i, v in enumerate(line.values) if v is not None]
    legend_x = width - right
    for line in reversed(lines):
        legend_x -= 16 + 6.5 * len(line.label)
        out.append(f'<rect x="{legend_x:.0f}" y="9" width="10" height="10" fill="{line.color}"/>'
                   f'<text class="legend" x="{legend_x + 14:.0f}" y="18">{html.escape(line.label)}</text>')
    return "".join(out) + "</svg>"


# --- HTML ---------------------------------------------------------------------------------------

def _time_unit(seconds: float) -> tuple[str, float]:
    return ("s", 1.0) if seconds >= 1 else ("ms", 1e3) if seconds >= 1e-3 else ("µs", 1e6)


def _duration(seconds: float) -> str:
    unit, scale = _time_unit(seconds)
    return f"{seconds * scale:.3g} {unit}"


def _ticks(runs: list[Run]) -> list[str]:
    return [f"{run.short} {run.when:%Y-%m-%d}" for run in runs]


def _slug(*parts: str) -> str:
    return "case-" + re.sub(r"[^A-Za-z0-9]+", "-", "-".join(parts)).strip("-")


def _describe(result: Result) -> str:
    keys = ("impl", "device", "dtype", "batch", "model")
    return " · ".join(f"{k} {result.extra[k]}" for k in keys if k in result.extra)


def case_card(row: Row, runs: list[Run], baseline: Run | None) -> str:
    """Median latency with its min–max band, and peak memory, over the machine's runs."""
    at = {id(run): result for run, result in row.history}
    picked = [at.get(id(run)) for run in runs]
    unit, scale = _time_unit(max(r.median for _, r in row.history))

    def scaled(pick) -> list[float | None]:
        return [None if r is None else pick(r) * scale for r in picked]

    ref = baseline.results.get(row.latest.key) if baseline else None
    latency = svg_chart(f"median latency ({unit}), shaded min–max", _ticks(runs),
                        [Line("median", scaled(lambda r: r.median), PALETTE[0])], unit,
                        band=(scaled(lambda r: r.low), scaled(lambda r: r.high)),
                        ref=ref.median * scale if ref else None)
    memory_lines = [Line(label, [None if r is None else r.memory(key) for r in picked], color) for label, key, color
                    in (("peak host RSS", "peak_rss_mb", PALETTE[2]), ("peak device", "peak_device_mb", PALETTE[3]))]
    memory_lines = [line for line in memory_lines if any(v is not None for v in line.values)]
    memory = (svg_chart("peak memory (MB)", _ticks(runs), memory_lines, "MB") if memory_lines
              else '<p class="muted">no memory recorded (extra_info.peak_rss_mb)</p>')
    flag = '<span class="flag">REGRESSED</span> ' if row.regressed else ""
    baseline_note = f" · dashed line: baseline {baseline.short}" if ref else ""
    return (f'<article class="case" id="{_slug(row.machine.label, row.latest.key)}"><h3>{flag}'
            f'{html.escape(row.latest.name)}</h3><p class="muted">{html.escape(row.latest.group or "no group")} · '
            f'{html.escape(_describe(row.latest))} · threshold {row.threshold_pct:g}% · '
            f'{html.escape(row.rule)}{baseline_note}</p><div class="charts">{latency}{memory}</div></article>')


def max_torch_ratios(runs: list[Run]) -> dict[str, list[float | None]]:
    """Per (device, dtype, batch, model): median(MAX) / median(PyTorch) in each run, None where either is missing."""
    ratios: dict[str, list[float | None]] = {}
    for i, run in enumerate(runs):
        medians: dict[tuple[str, str], float] = {}
        for result in run.results.values():
            if result.group == RATIO_GROUP and result.extra.get("impl") in ("max", "torch"):
                device, dtype, batch, model = (result.extra.get(k, "?") for k in ("device", "dtype", "batch", "model"))
                combo = f"{device} {dtype} batch {batch} {model}"
                medians[(combo, result.extra["impl"])] = result.median
        for (combo, impl), median in medians.items():
            if impl == "max" and (combo, "torch") in medians:
                ratios.setdefault(combo, [None] * len(runs))[i] = median / medians[(combo, "torch")]
    return ratios


def _machine_section(machine: Machine, runs: list[Run], rows: list[Row], baseline: Run | None) -> str:
    info = runs[-1].info
    details = " · ".join(f"{k} {info[k]}" for k in MACHINE_DETAILS if info.get(k) not in (None, ""))
    ratios = max_torch_ratios(runs)
    ratio_chart = (svg_chart("MAX / PyTorch median latency (below 1: MAX faster)", _ticks(runs),
                             [Line(combo, values, PALETTE[i % len(PALETTE)]) for i, (combo, values)
                              in enumerate(sorted(ratios.items()))], "×", ref=1.0, width=1000, height=270)
                   if ratios else "")
    cards = "".join(case_card(row, runs, baseline if baseline and machine.same_hardware(baseline.machine) else None)
                    for row in sorted(rows, key=lambda r: (not r.regressed, r.latest.group, r.latest.name)))
    return (f'<section class="machine"><h2>{html.escape(machine.label)}</h2><p class="muted">{len(runs)} runs, '
            f'{runs[0].when:%Y-%m-%d} to {runs[-1].when:%Y-%m-%d} · {html.escape(details)}</p>'
            f'<div class="ratio">{ratio_chart}</div>{cards}</section>')


def _table(report: Report) -> str:
    header = ("machine", "group", "case", "latest median", "vs previous", "vs baseline", "GFLOP/s",
              "peak host MB", "peak device MB", "verdict", "rule")
    body = []
    for row in report.rows:
        r = row.latest
        cells = [row.machine.node or row.machine.label, r.group or "—",
                 f'<a href="#{_slug(row.machine.label, r.key)}">{html.escape(r.name)}</a>', _duration(r.median),
                 _pct(row.vs_previous.change), _pct(row.vs_baseline.change) if row.vs_baseline else "—",
                 _g(r.gflops) if r.gflops else "—",
                 *(f"{r.memory(k):.0f}" if r.memory(k) is not None else "—"
                   for k in ("peak_rss_mb", "peak_device_mb")),
                 "REGRESSED" if row.regressed else "ok", row.rule]
        cells = [c if c.startswith("<a ") else html.escape(c) for c in cells]
        body.append(f'<tr class="{"regressed" if row.regressed else "ok"}" data-case="{html.escape(r.key)}">'
                    + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return (f'<table id="summary"><thead><tr>{"".join(f"<th>{h}</th>" for h in header)}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;margin:24px;color:#111827;
background:#f9fafb;font-size:14px}h1{margin:0 0 4px}h2{margin:32px 0 4px;border-bottom:2px solid #d1d5db}
h3{margin:0 0 2px;font-size:15px}.muted{color:#6b7280;margin:2px 0 10px}
.callout{padding:10px 14px;border-radius:6px;margin:14px 0;font-weight:600}.bad{background:#fee2e2;color:#991b1b}
.good{background:#dcfce7;color:#166534}.warn{background:#fef3c7;color:#92400e;font-weight:400}
table{border-collapse:collapse;width:100%;background:#fff}th,td{padding:5px 8px;border-bottom:1px solid #e5e7eb;
text-align:left;font-variant-numeric:tabular-nums}th{background:#f3f4f6}
tr.regressed td{background:#fee2e2;color:#7f1d1d}
td:first-child{white-space:nowrap}.flag{background:#dc2626;color:#fff;border-radius:4px;padding:1px 6px;font-size:12px}
.case{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:12px;margin:12px 0}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{background:#fff}
.chart .title{font-size:13px;font-weight:600;fill:#374151}.chart .grid{stroke:#e5e7eb}
.chart .ylab{font-size:11px;fill:#6b7280;text-anchor:end}.chart .xlab{font-size:10px;fill:#6b7280;text-anchor:middle}
.chart .legend{font-size:11px;fill:#374151}.chart .line{fill:none;stroke-width:2}
.chart .band{fill:#93c5fd;opacity:.35}.chart .ref{stroke:#6b7280;stroke-dasharray:5 4}code{font-size:12px}
"""


def render_html(report: Report) -> str:
    """The whole dashboard as one HTML document: inline CSS and SVG, nothing fetched."""
    n = len(report.regressions)
    called = "; ".join(f"{row.latest.name} on {row.machine.node or row.machine.label} {_pct(row.worst)} ({row.rule})"
                       for row in report.regressions)
    callout = (f'<div class="callout bad">{n} regression{"s" * (n != 1)}: {html.escape(called)}</div>' if n
               else '<div class="callout good">No regressions.</div>')
    skipped = "".join(f"<li><code>{html.escape(str(path.relative_to(report.source)))}</code>: {html.escape(why)}</li>"
                      for path, why in report.skipped)
    warnings = [f"Skipped {len(report.skipped)} unreadable file(s):<ul>{skipped}</ul>"] if skipped else []
    warnings += [html.escape(note) for note in report.notes]
    by_machine: dict[Machine, list[Row]] = {}
    for row in report.rows:
        by_machine.setdefault(row.machine, []).append(row)
    sections = "".join(_machine_section(machine, runs, by_machine.get(machine, []), report.baseline)
                       for machine, runs in report.series.items())
    baseline = f" · baseline {html.escape(report.baseline.short)}" if report.baseline else ""
    rule = (f"regression: median slower than the group threshold (default {DEFAULT_THRESHOLD_PCT:g}%) and beyond "
            f"noise (Mann-Whitney p &lt; {SIGNIFICANCE:g} on saved rounds, else {NOISE_MULTIPLE:g}× the spread of "
            f"earlier runs)")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>maxwhisper benchmarks</title>'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{CSS}</style></head><body>'
            f'<h1>maxwhisper benchmarks</h1><p class="muted">{html.escape(str(report.source))} · '
            f'{sum(map(len, report.series.values()))} runs on {len(report.series)} machine(s){baseline} · generated '
            f'{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC · {rule}</p>{callout}'
            + "".join(f'<div class="callout warn">{w}</div>' for w in warnings)
            + f"{_table(report)}{sections}</body></html>\n")


def main(args) -> int:
    """`python -m maxwhisper dashboard`: write the report (and GitHub JSON); 1 if anything regressed."""
    report = build_report(pathlib.Path(args.results), args.baseline, parse_thresholds(args.threshold))
    for path, why in report.skipped:
        print(f"skipped unreadable {path}: {why}", file=sys.stderr)
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    output = pathlib.Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render_html(report), encoding="utf-8")
    if args.github_json:
        pathlib.Path(args.github_json).write_text(json.dumps(github_benchmarks(report), indent=1), encoding="utf-8")
    print(summary_text(report))
    print(f"wrote {output}", file=sys.stderr)
    return 1 if report.regressions else 0
