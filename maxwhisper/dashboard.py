"""Benchmark history report: judge every case of every series, and write the page, the log and GitHub JSON.

`python -m maxwhisper dashboard [RESULTS_DIR] -o report.html [--baseline FILE] [--threshold GROUP=PCT]
[--github-json FILE]`. Loading lives in maxwhisper.results, the rule in maxwhisper.regression, the page in
maxwhisper.render. Every figure of every case is judged over its series' whole history: the drift-cancelled
time, peak host memory and peak device memory. A case missing from a series' latest run is reported and
makes the exit status 1 unless --allow-missing; a captured case whose capture failed in the latest run is a
regression of its own (Result.not_replayed), and such runs stay out of its history; so is a MAX transcript that
differs from openai-whisper's (Result.wrong_text), whose timings are still judged.
"""
from __future__ import annotations

import json
import math
import pathlib
import sys
from collections import Counter
from dataclasses import dataclass, replace

from maxwhisper import regression
from maxwhisper.errors import MaxWhisperError
from maxwhisper.regression import Call
from maxwhisper.render import pct, render_html
from maxwhisper.results import UNREADABLE, Machine, Result, Run, figures, load_runs, parse_run, split_series, why


@dataclass
class Judged:
    """One figure of a case over its series' runs (None where the case or figure is absent), and its call."""
    metric: str  # "time", "peak host memory", "peak device memory"
    normalisation: str
    unit: str
    values: list[float | None]
    call: Call
    threshold_pct: float | None  # None: charted, not judged


@dataclass
class Row:
    """A case in one series: its history (oldest first), each figure judged, and the pinned baseline's call."""
    machine: Machine
    history: list[tuple[Run, Result]]
    threshold_pct: float | None
    judged: list[Judged]
    missing: bool = False  # measured in earlier runs of the series, absent from its latest run
    vs_baseline: Call | None = None
    busy_reason: str | None = None  # why the latest run's times are not judged (Result.busy_reason), where they are not
    not_replayed: str | None = None  # why the latest run's captured steps were launched (Result.not_replayed): a failure
    wrong_text: str | None = None  # the latest run's MAX transcript differs from openai-whisper's (Result.wrong_text)

    @property
    def run(self) -> Run:
        return self.history[-1][0]

    @property
    def latest(self) -> Result:
        return self.history[-1][1]

    @property
    def calls(self) -> list[tuple[str, Call]]:
        baseline = [("baseline", self.vs_baseline)] if self.vs_baseline else []
        failures = [(name, Call(True, None, why)) for name, why in (("capture", self.not_replayed),
                                                                    ("text", self.wrong_text)) if why]
        return failures + [(j.metric, j.call) for j in self.judged] + baseline

    @property
    def regressed(self) -> bool:
        return any(call.regressed for _, call in self.calls)

    @property
    def normalisation(self) -> str:
        return next((j.normalisation for j in self.judged if j.metric == "time"), "")

    @property
    def change(self) -> float | None:
        return next((j.call.change for j in self.judged if j.metric == "time"), None)

    @property
    def rule(self) -> str:
        if self.missing:
            return f"missing from the latest run (last seen {self.run.short})"
        calls = ([(m, c) for m, c in self.calls if "memory" in m or m in ("capture", "text")] if self.busy_reason
                 else self.calls)
        deciding = [(metric, call) for metric, call in calls if call.regressed] or calls
        busy = [f"times not judged: {self.busy_reason}; rerun it on a quiet machine"] if self.busy_reason else []
        return "; ".join(busy + [f"{metric}: {call.rule}" for metric, call in deciding])

    @property
    def state(self) -> str:
        """REGRESSED, MISSING, BUSY (its times not judged) or ok."""
        return ("REGRESSED" if self.regressed else "MISSING" if self.missing
                else "BUSY" if self.busy_reason else "ok")

    @property
    def worst(self) -> float:
        changes = [c.change for _, c in self.calls if c.change is not None and (c.regressed or not self.regressed)]
        return max(changes, default=-math.inf)


@dataclass
class Report:
    series: dict[Machine, list[Run]]  # each machine's (and mode's) runs, oldest first
    rows: list[Row]  # worst first
    skipped: list[tuple[pathlib.Path, str]]
    baseline: Run | None
    notes: list[str]
    source: pathlib.Path

    @property
    def regressions(self) -> list[Row]:
        return [row for row in self.rows if row.regressed]

    @property
    def missing(self) -> list[Row]:
        return [row for row in self.rows if row.missing]

    @property
    def busy(self) -> list[Row]:
        """Cases whose latest run ran beside other processes: their times were not judged."""
        return [row for row in self.rows if row.state == "BUSY"]


def parse_thresholds(specs: list[str] | None) -> dict[str, float]:
    """["encoder-paired=5", "memory=3", ...] -> {"encoder-paired": 5.0, "memory": 3.0} (memory: every memory figure)."""
    thresholds = {}
    for spec in specs or ():
        group, _, pct = spec.partition("=")
        try:
            value = float(pct.strip().rstrip("%"))
        except ValueError:
            value = math.nan
        if not group.strip() or not value >= 0:
            raise MaxWhisperError(f"--threshold {spec!r}: expected GROUP=PCT with PCT >= 0, e.g. encoder-paired=5")
        thresholds[group.strip()] = value
    return thresholds


def judge_case(machine: Machine, runs: list[Run], key: str, thresholds: dict[str, float], baseline: Run | None) -> Row:
    """Every figure of one case over the series, judged by maxwhisper.regression."""
    history = [(run, run.results[key]) for run in runs if key in run.results]
    per_run = {id(run): figures(run, result) for run, result in history}
    interleaved = per_run[id(history[-1][0])]["time"].interleaved
    threshold = history[-1][1].threshold_pct("time", thresholds, interleaved)
    metrics = dict.fromkeys(metric for figs in per_run.values() for metric in figs)
    results = {id(run): result for run, result in history}
    current = history[-1][1] if history[-1][0] is runs[-1] else None  # the case in the series' latest run, if there
    judged = []
    for metric in metrics:
        latest = next(per_run[id(run)][metric] for run, _ in reversed(history) if metric in per_run[id(run)])
        # only figures normalised as the latest one is compare with it (a run without the probe, say, does not)
        figs = [fig if (fig := per_run.get(id(run), {}).get(metric)) and fig.normalisation == latest.normalisation
                else None for run in runs]
        values = [fig.value if fig else None for fig in figs]
        limit_pct = history[-1][1].threshold_pct(metric, thresholds, interleaved)
        if limit_pct is None:
            call = Call(False, None, "charted, not judged (a launched GPU step: regression.GPU_THRESHOLDS_PCT)")
        elif current is not None and (why_not := current.left_out(metric)):
            call = Call(False, None, f"not judged ({why_not} run)")
        else:  # busy runs' times, and every figure of a capture that failed, are charted, not judged
            excluded = {id(run): results[id(run)].left_out(metric) for fig, run in zip(figs, runs) if fig}
            kept = [fig for fig, run in zip(figs, runs) if fig and not excluded[id(run)]]
            call = regression.judge([fig.judged for fig in kept], limit_pct)
            if call.regressed and math.isclose(kept[-1].judged / (1 + call.change), latest.floor):  # the step's base
                call = replace(call, rule=f"step up to {kept[-1].value:g} {latest.unit} from run {call.since + 1} of "
                                          f"{len(kept)}, from under the {latest.floor:g} {latest.unit} floor")
            if gone := ", ".join(f"{n} {why} run{'s' * (n > 1)}"
                                 for why, n in Counter(filter(None, excluded.values())).items()):
                call = replace(call, rule=f"{call.rule}, {gone} left out")
        judged.append(Judged(metric, latest.normalisation, latest.unit, values, call, limit_pct))
    vs_baseline, pinned = None, baseline.results.get(key) if baseline is not None else None
    if pinned is not None and (why := pinned.left_out("time")):
        vs_baseline = Call(False, None, f"not compared: pinned {baseline.short} " + (
            "ran beside other processes" if why == "busy" else "timed launched steps: its capture failed"))
    elif pinned is not None and current is not None and threshold is None:
        vs_baseline = Call(False, None, f"not compared with pinned {baseline.short}: its time is not judged")
    elif pinned is not None and current is not None and not current.left_out("time"):
        old = figures(baseline, pinned)["time"].value
        change = figures(runs[-1], current)["time"].value / old - 1
        vs_baseline = Call(change * 100 > threshold, change, f"{change:+.1%} vs pinned {baseline.short}")
    if current is None:
        return Row(machine, history, threshold, judged, True, vs_baseline)
    return Row(machine, history, threshold, judged, False, vs_baseline, current.busy_reason, current.not_replayed,
               current.wrong_text)


def build_report(results: pathlib.Path, baseline: str | None = None,
                 thresholds: dict[str, float] | None = None) -> Report:
    """Load every run under `results`, split them into series and judge every case of each."""
    thresholds = thresholds or {}
    if results.is_file():
        raise MaxWhisperError(f"results directory {results} is a file; pass the directory holding the saved runs "
                              f"(default .benchmarks), or pin this run with --baseline {results}")
    if not results.is_dir():
        raise MaxWhisperError(f"results directory {results} does not exist; run `make bench` first or pass RESULTS_DIR")
    runs, skipped = load_runs(results)
    if not runs:
        raise MaxWhisperError(f"no readable pytest-benchmark runs under {results} ({len(skipped)} unreadable JSON "
                              "files); save some with `make bench` (or pytest tests/bench --benchmark-autosave) first")
    pinned = None
    if baseline:
        try:
            pinned = parse_run(pathlib.Path(baseline))
        except UNREADABLE as exc:
            raise MaxWhisperError(f"--baseline {baseline} is not a readable pytest-benchmark run "
                                  f"({why(exc)})") from None
    series = split_series(runs)
    rows = [judge_case(machine, machine_runs, key, thresholds,
                       pinned if pinned and pinned.machine.same_hardware(machine) else None)
            for machine, machine_runs in series.items()
            for key in dict.fromkeys(key for run in machine_runs for key in run.results)]
    rows.sort(key=lambda row: (not row.regressed, not row.missing, -row.worst, row.machine.label, row.latest.key))
    notes = []
    if pinned and not any(pinned.machine.same_hardware(machine) for machine in series):
        notes.append(f"baseline {baseline} was measured on {pinned.machine.label}, which matches no series here")
    groups = {row.latest.group for row in rows}
    notes += [f"--threshold {group}=...: no benchmark is in group {group!r}" for group in thresholds
              if group not in groups | {"memory"}]
    return Report(series, rows, skipped, pinned, notes, results)


# --- text and JSON outputs ----------------------------------------------------------------------

def summary_text(report: Report) -> str:
    """One line per case, worst first, naming the normalisation and the rule that decided it."""
    n, m, b = len(report.regressions), len(report.missing), len(report.busy)
    skipped = f", {len(report.skipped)} unreadable file(s) skipped" if report.skipped else ""
    busy = f", {b} not judged (busy)" if b else ""
    lines = [f"{len(report.rows)} cases in {len(report.series)} series: {n} regression{'s' * (n != 1)}, "
             f"{m} missing from the latest run{busy}{skipped}"]
    for row in report.rows:  # plain ASCII: a nightly log may not be UTF-8
        change = "n/a" if row.change is None else pct(row.change)  # not judged, or missing
        lines.append(f"{row.state:9} {change:8} {row.latest.name} [{row.latest.group or 'no group'}, "
                     f"vs {row.normalisation}] on {row.machine.short}: {row.rule}")
    return "\n".join(lines)


def github_benchmarks(report: Report) -> list[dict]:
    """github-action-benchmark `customSmallerIsBetter` entries for each series' latest run."""
    several = len(report.series) > 1
    entries = []
    for row in report.rows:
        if row.missing or row.not_replayed:  # a failed capture timed the launched step: not this case's figures
            continue
        result, where = row.latest, f" @ {row.machine.short}" if several else ""
        name = f"{result.group + '/' if result.group else ''}{result.name}{where}"
        spread = f"± {result.spread * result.median * 1e3:.3g}" if result.spread is not None else None
        entries.append({"name": name, "unit": "ms", "value": round(result.median * 1e3, 6),
                        **({"range": spread} if spread else {}), "extra": f"commit {row.run.short}; {row.rule}"})
        for key, label in (("peak_rss_mb", "peak host memory"), ("peak_device_mb", "peak device memory")):
            if result.number(key) is not None:
                entries.append({"name": f"{name} {label}", "unit": "MB", "value": result.number(key),
                                "extra": f"commit {row.run.short}"})
    return entries


def main(args) -> int:
    """`python -m maxwhisper dashboard`: write the report (and GitHub JSON); 1 if anything regressed, or if a
    case is missing from the latest run without --allow-missing."""
    outputs = {"-o": pathlib.Path(args.output), **({"--github-json": pathlib.Path(args.github_json)}
                                                   if args.github_json else {})}
    for flag, path in outputs.items():  # before any work: a bad path fails now, not after the report is built
        if path.is_dir():
            example = path / ("report.html" if flag == "-o" else "benchmarks.json")
            raise MaxWhisperError(f"{flag} {path} is a directory; name the file, e.g. {example}")
        if not (above := next(p for p in path.parents if p.exists())).is_dir():  # missing folders are made
            raise MaxWhisperError(f"{flag} {path}: {above} is a file, not a directory; pass a path in a directory")
    report = build_report(pathlib.Path(args.results), args.baseline, parse_thresholds(args.threshold))
    for path, reason in report.skipped:
        print(f"skipped unreadable {path}: {reason}", file=sys.stderr)
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    for flag, path in outputs.items():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(render_html(report) if flag == "-o" else json.dumps(github_benchmarks(report), indent=1),
                            encoding="utf-8")
        except OSError as exc:
            raise MaxWhisperError(f"{flag} {path}: cannot write it ({exc.strerror or exc}); pass a writable file "
                                  "path") from None
    print(summary_text(report))
    print(f"wrote {outputs['-o']}", file=sys.stderr)
    missing_fails = report.missing and not getattr(args, "allow_missing", False)
    return 1 if report.regressions or missing_fails else 0
