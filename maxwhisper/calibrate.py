"""Calibrate the regression rule on real runs: `python -m maxwhisper.nightly --calibrate [--results DIR]`.

For each case of each series with at least MIN_SERIES runs, and each judged figure (drift-cancelled time,
memory), the real per-run figures are the clean history. Three measurements:
- false alarms: the rule run as each night would run it, on every prefix of the clean history in its real
  order (one call per night that has MIN_RUNS runs of history); the share of nights called regressed.
- the smallest threshold of THRESHOLD_GRID that is quiet: no false alarm in real order, and at most CLEAN_CALLS of
  REPLAYS random orders of the clean history called on a random night (real order is one order: a set whose
  runs happen to drift downward hides noise that another order shows).
- detection: REPLAYS replays per slowdown size; each shuffles the real figures (their real noise, in a random
  order), multiplies the figures from a random run onward by 1 + slowdown (the MAX case slowed, its partner
  and the probe unchanged), and asks whether the rule calls it on the first slow run, and within 3 runs (a set
  of MIN_SERIES runs has only 2 slow runs, the first on its first judged night: "within" there means those 2).
  A slowdown of 0 measures how often the replays are called with nothing injected.
For comparison each series is also judged with the other estimator of an interleaved ratio, and without
drift cancelling (the case's raw median), and, where
asv is installed, with asv's step detection in place of ruptures' (the alternative docs/benchmarks.md weighs).
"""
from __future__ import annotations

import pathlib
import random
from dataclasses import dataclass

from maxwhisper import regression
from maxwhisper.results import (CPU_ESTIMATOR, ESTIMATOR, ESTIMATORS, Figure, figures, load_runs, split_series,
                                time_figure)

SLOWDOWNS = (0.0, 0.03, 0.05, 0.10, 0.15, 0.20)  # 0: the replays' own false-alarm rate, for reading the others
REPLAYS = 200
MIN_SERIES = 8
WITHIN = 3
SEED = 20261125
THRESHOLD_GRID = (3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0)
CLEAN_CALLS = 0.02  # of random-order clean nights called: a nightly of ~10 interleaved figures red ~1 night in 5 at most


@dataclass
class Calibration:
    series: str  # "case · figure · normalisation"
    runs: int
    false_alarms: int
    nights: int
    first: dict[float, float]  # slowdown -> share called on the first slow run
    within: dict[float, float]  # slowdown -> share called within WITHIN runs
    quiet_pct: float | None = None  # the smallest threshold of THRESHOLD_GRID that is quiet here (see above)

    @property
    def false_alarm_rate(self) -> float:
        return self.false_alarms / self.nights if self.nights else 0.0


def calibrate_values(label: str, values: list[float], threshold_pct: float, judge=regression.judge,
                     replays: int = REPLAYS, seed: int = SEED) -> Calibration:
    n = len(values)
    nights = range(regression.MIN_RUNS, n + 1)
    false_alarms = sum(judge(values[:t], threshold_pct).regressed for t in nights)
    quiet = next((pct for pct in THRESHOLD_GRID if not any(judge(values[:t], pct).regressed for t in nights)
                  and clean_calls(values, pct, judge, replays, seed) <= CLEAN_CALLS), None)
    rng = random.Random(seed)
    first, within = {}, {}
    for slowdown in SLOWDOWNS:
        hits_first = hits_within = 0
        for _ in range(replays):
            clean = rng.sample(values, n)
            # WITHIN slow runs exist from MIN_RUNS - 1 + WITHIN runs; a shorter set (from MIN_SERIES) has fewer
            step = rng.randrange(regression.MIN_RUNS - 1, max(regression.MIN_RUNS, n - WITHIN + 1))
            slowed = clean[:step] + [v * (1 + slowdown) for v in clean[step:]]
            calls = [judge(slowed[:step + j + 1], threshold_pct).regressed for j in range(min(WITHIN, n - step))]
            hits_first += calls[0]
            hits_within += any(calls)
        first[slowdown], within[slowdown] = hits_first / replays, hits_within / replays
    return Calibration(label, n, false_alarms, len(nights), first, within, quiet)


def clean_calls(values: list[float], threshold_pct: float, judge=regression.judge, replays: int = REPLAYS,
                seed: int = SEED) -> float:
    """The share of replays (a random order of the clean figures, judged on a random night) called regressed."""
    rng, n = random.Random(seed), len(values)
    return sum(judge(rng.sample(values, n)[:rng.randrange(regression.MIN_RUNS, n + 1)], threshold_pct).regressed
               for _ in range(replays)) / replays


def asv_steps_up(values: list[float], threshold: float) -> list[tuple[int, float]]:
    """regression.steps_up with asv's detector: `detect_steps` (L1 Potts fit, penalty from the series' own
    noise) and `detect_regressions` (upward steps above the threshold), for comparison."""
    from asv import step_detect
    _, _, found = step_detect.detect_regressions(step_detect.detect_steps(values), threshold=threshold)
    return [(after, before) for _, after, before, _ in (found or ())[-1:]]


def asv_judge(values: list[float], threshold_pct: float) -> regression.Call:
    return regression.judge(values, threshold_pct, detect=asv_steps_up)


def judged_figures(series: list, key: str) -> tuple[list, dict[str, list[Figure]]] | None:
    """The quiet runs (run, result) of case `key` in `series` (neither busy nor a failed capture), and per figure of the last of them the figures the
    nightly judges: times without the busy runs, memory with them (neither from a capture that failed). None with
    fewer than MIN_SERIES quiet runs."""
    everything = [(run, run.results[key], figures(run, run.results[key])) for run in series if key in run.results]
    quiet = [(run, result) for run, result, _ in everything if not result.left_out("time")]
    if len(quiet) < MIN_SERIES:
        return None
    last = next(figs for _, result, figs in reversed(everything) if not result.left_out("time"))
    return quiet, {metric: [figs[metric] for _, result, figs in everything if metric in figs and not result.left_out(metric)]
                   for metric in last}


def raw_figure(result) -> Figure:
    return Figure(result.median, "none (raw median)", "s")


def calibrate(results: pathlib.Path, thresholds: dict[str, float] | None = None, judge=regression.judge,
              replays: int = REPLAYS, raw: bool = True) -> tuple[list[Calibration], str]:
    """Calibrations of every figure with enough runs, and a note of the series they came from."""
    runs, _ = load_runs(results)
    out, sources = [], []
    for machine, series in split_series(runs).items():
        if len(series) < MIN_SERIES:
            continue
        sources.append(f"{len(series)} runs of {machine.cpu or machine.label} ({machine.mode or 'unknown'} mode), "
                       f"{series[0].when:%Y-%m-%d %H:%M} to {series[-1].when:%Y-%m-%d %H:%M} UTC")
        keys = [key for key in series[-1].results if sum(key in run.results for run in series) >= MIN_SERIES]
        for key in keys:
            if (found := judged_figures(series, key)) is None:
                continue
            history, judged = found
            interleaved = judged["time"][-1].interleaved
            variants = list(judged.items())
            if raw and interleaved:
                for name in ESTIMATORS:  # only the runs that recorded what the estimator reads
                    figs = [time_figure(run, result, name) for run, result in history]
                    figs = [f for f in figs if f.interleaved]
                    variants += [(f"time [{name}]", figs)] if name not in (ESTIMATOR, CPU_ESTIMATOR) else []
            if raw and judged["time"][-1].normalisation != raw_figure(history[-1][1]).normalisation:
                variants.append(("time", [raw_figure(result) for _, result in history]))
            for metric, figs in variants:
                if len(figs) >= MIN_SERIES:
                    label = f"{history[-1][1].name} · {metric} · {figs[-1].normalisation}"
                    threshold = history[-1][1].threshold_pct(metric.split(" [")[0], thresholds, interleaved)
                    shown = f">{threshold:g}%" if threshold is not None else f"not judged; at {THRESHOLD_GRID[-1]:g}%"
                    out.append(calibrate_values(f"{label} · {shown}", [f.judged for f in figs],
                                                threshold if threshold is not None else THRESHOLD_GRID[-1], judge, replays))
    return out, "; ".join(sources)


def table(calibrations: list[Calibration], source: str, replays: int = REPLAYS) -> str:
    """A Markdown table, as docs/benchmarks.md shows it."""
    sizes = " | ".join(f"{s:.0%}" if s else "none (clean)" for s in SLOWDOWNS)
    lines = [f"Real runs: {source}. {replays} replays per size; cells: called on the first slow run / within "
             f"{WITHIN} runs (a set of {MIN_SERIES} runs: its 2 slow runs).", "",
             f"| series (case · figure · normalisation · threshold) | runs | {sizes} | false alarms per clean run "
             f"| smallest quiet threshold (none in order, <= {CLEAN_CALLS:.0%} of random orders) |",
             "| --- | --- | " + " | ".join("---" for _ in SLOWDOWNS) + " | --- | --- |"]
    for c in calibrations:
        cells = " | ".join(f"{c.first[s]:.0%} / {c.within[s]:.0%}" for s in SLOWDOWNS)
        quiet = f"{c.quiet_pct:g}%" if c.quiet_pct is not None else f"> {THRESHOLD_GRID[-1]:g}%"
        lines.append(f"| {c.series} | {c.runs} | {cells} | {c.false_alarms}/{c.nights} ({c.false_alarm_rate:.0%}) "
                     f"| {quiet} |")
    return "\n".join(lines)
