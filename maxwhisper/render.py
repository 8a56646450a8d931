"""The dashboard page: one self-contained HTML file (inline CSS and SVG, nothing fetched).

A summary table worst first, then per machine and mode: the MAX/PyTorch ratio over runs, and per case its
judged figure (with the normalisation it uses), latency with a min-max band, and peak memory.
"""
from __future__ import annotations

import datetime as dt
import html
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from maxwhisper.regression import (BLOCK_MEMORY_PCT, BLOCK_THRESHOLD_PCT, DEFAULT_THRESHOLD_PCT, MEMORY_THRESHOLD_PCT,
                                   RECENT)
from maxwhisper.results import RATIO_GROUP, Machine, Result, Run, time_figure

if TYPE_CHECKING:
    from maxwhisper.dashboard import Report, Row

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4d7c0f", "#be185d")
LEGEND_CHAR_PX = 7.0  # 11 px system-ui: widest measured average glyph in Chromium was 6.4 px
MACHINE_DETAILS = ("cpu_model", "cpu_count", "gpu_name", "gpu_count", "cuda_version", "driver_version",
                   "max_version", "torch_version", "whisper_version")


def pct(change: float | None) -> str:
    return "—" if change is None else f"{0.0 if abs(change) < 0.0005 else change:+.1%}"


@dataclass
class Line:
    label: str
    values: list[float | None]
    color: str
    dashed: bool = False


def _limit(threshold_pct: float | None) -> str:
    return "not judged" if threshold_pct is None else f"{threshold_pct:g}%"


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
    """A line chart over runs (x: one tick per run), y from 0, with an optional shaded band and reference line.
    The legend sits in rows of its own under the title, wrapped to the chart's width: it never covers the
    title or the plot, whatever the number and length of the series' labels."""
    left, right, bottom, inset = 70, 14, 46, 34  # inset keeps the first and last x labels inside
    legend, row, cursor = [], 0, left
    for line in lines if len(lines) > 1 or (lines and lines[0].label != "median") else ():
        item_w = 16 + LEGEND_CHAR_PX * len(line.label)
        if cursor + item_w > width - right and cursor > left:
            row, cursor = row + 1, left
        legend.append((line, cursor, 36 + 16 * row))
        cursor += item_w + 12
    top = 30 + 16 * (row + 1 if legend else 0)
    height += top - 30  # the plot keeps its height; the legend rows are added above it
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
    for line, lx, ly in legend:
        out.append(f'<rect x="{lx:.0f}" y="{ly - 9}" width="10" height="10" fill="{line.color}"/>'
                   f'<text class="legend" x="{lx + 14:.0f}" y="{ly}">{html.escape(line.label)}</text>')
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
    memory_lines = [Line(label, [None if r is None else r.number(key) for r in picked], color) for label, key, color
                    in (("peak host RSS", "peak_rss_mb", PALETTE[2]), ("peak device", "peak_device_mb", PALETTE[3]))]
    memory_lines = [line for line in memory_lines if any(v is not None for v in line.values)]
    memory = (svg_chart("peak memory (MB)", _ticks(runs), memory_lines, "MB") if memory_lines
              else '<p class="muted">no memory recorded (extra_info.peak_rss_mb)</p>')
    judged = next(j for j in row.judged if j.metric == "time")
    timed = [j for j in row.judged if "time" in j.metric]
    times = [Line(j.metric, j.values, PALETTE[4 + i]) for i, j in enumerate(timed)]
    figure = svg_chart(f"judged: time over {judged.normalisation.split(' (')[0]}", _ticks(runs), times, judged.unit)
    flag = f'<span class="flag">{row.state}</span> ' if row.state != "ok" else ""
    baseline_note = f" · dashed line: baseline {baseline.short}" if ref else ""
    return (f'<article class="case" id="{_slug(row.machine.label, row.latest.key)}"><h3>{flag}'
            f'{html.escape(row.latest.name)}</h3><p class="muted">{html.escape(row.latest.group or "no group")} · '
            f'{html.escape(_describe(row.latest))} · normalised by {html.escape(judged.normalisation)} · thresholds '
            f'{", ".join(f"{j.metric} {_limit(j.threshold_pct)}" for j in row.judged)} · {html.escape(row.rule)}'
            f'{baseline_note}</p>'
            f'<div class="charts">{figure}{latency}{memory}</div></article>')


def max_torch_ratios(runs: list[Run]) -> dict[str, list[float | None]]:
    """Per (device, dtype, batch, model): median(MAX) / median(PyTorch) in each run, None where either is missing;
    and per interleaved case with a partner, the median of its per-round ratios."""
    ratios: dict[str, list[float | None]] = {}
    for i, run in enumerate(runs):
        medians: dict[tuple[str, str], float] = {}
        for result in run.results.values():
            figure = time_figure(run, result)
            if figure.normalisation == "partner (interleaved)":
                label = f"{result.name} / {result.extra.get('partner', 'partner')}, per round"
                ratios.setdefault(label, [None] * len(runs))[i] = figure.value
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
    header = ("machine", "group", "case", "latest median", "normalised by", "change", "vs baseline", "GFLOP/s",
              "peak host MB", "peak device MB", "verdict", "rule")
    body = []
    for row in report.rows:
        r = row.latest
        cells = [row.machine.node or row.machine.label, r.group or "—",
                 f'<a href="#{_slug(row.machine.label, r.key)}">{html.escape(r.name)}</a>', _duration(r.median),
                 row.normalisation, pct(row.change), pct(row.vs_baseline.change) if row.vs_baseline else "—",
                 _g(r.gflops) if r.gflops else "—",
                 *(f"{r.number(k):.0f}" if r.number(k) is not None else "—"
                   for k in ("peak_rss_mb", "peak_device_mb")),
                 row.state, row.rule]
        cells = [c if c.startswith("<a ") else html.escape(c) for c in cells]
        state = row.state.lower()
        body.append(f'<tr class="{state}" data-case="{html.escape(r.key)}" data-normalisation="'
                    f'{html.escape(row.normalisation)}">'
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
tr.regressed td{background:#fee2e2;color:#7f1d1d}tr.missing td{background:#fef3c7}tr.busy td{background:#e0e7ff}
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
    called = "; ".join(f"{row.latest.name} on {row.machine.short} "
                       f"{pct(row.worst) if row.worst > -math.inf else 'n/a'} ({row.rule})" for row in report.regressions)
    callout = (f'<div class="callout bad">{n} regression{"s" * (n != 1)}: {html.escape(called)}</div>' if n
               else '<div class="callout good">No regressions.</div>')
    callout += "".join(f'<div class="callout warn">missing from the latest run: {html.escape(row.latest.name)} on '
                       f'{html.escape(row.machine.short)} (last seen {html.escape(row.run.short)})</div>'
                       for row in report.missing)
    if report.busy:
        callout += (f'<div class="callout warn">{len(report.busy)} case(s) ran beside other processes; their times '
                    f'were not judged: {html.escape(", ".join(row.latest.name for row in report.busy))}. Rerun on a '
                    f'quiet machine.</div>')
    skipped = "".join(f"<li><code>{html.escape(str(path.relative_to(report.source)))}</code>: "
                      f"{html.escape(reason)}</li>" for path, reason in report.skipped)
    warnings = [f"Skipped {len(report.skipped)} unreadable file(s):<ul>{skipped}</ul>"] if skipped else []
    warnings += [html.escape(note) for note in report.notes]
    by_machine: dict[Machine, list[Row]] = {}
    for row in report.rows:
        by_machine.setdefault(row.machine, []).append(row)
    sections = "".join(_machine_section(machine, runs, by_machine.get(machine, []), report.baseline)
                       for machine, runs in report.series.items())
    baseline = f" · baseline {html.escape(report.baseline.short)}" if report.baseline else ""
    rule = (f"regression: ruptures change points over each figure's whole history leave the latest level above the "
            f"best earlier one by more than the threshold (per group and figure as calibrated on real runs; otherwise "
            f"{DEFAULT_THRESHOLD_PCT:g}% for time and {MEMORY_THRESHOLD_PCT:g}% for memory of a case timed round by "
            f"round against its partner or probe, {BLOCK_THRESHOLD_PCT:g}% and {BLOCK_MEMORY_PCT:g}% for one timed in a "
            f"block of its own; a launched GPU step's time is charted, not judged), and the step's first slow run is "
            f"one of the last {RECENT}; times are "
            f"judged as ratios to their PyTorch partner or to the machine-speed probe (column 'normalised by')")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>maxwhisper benchmarks</title>'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{CSS}</style></head><body>'
            f'<h1>maxwhisper benchmarks</h1><p class="muted">{html.escape(str(report.source))} · '
            f'{sum(map(len, report.series.values()))} runs in {len(report.series)} series{baseline} · generated '
            f'{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC · {rule}</p>{callout}'
            + "".join(f'<div class="callout warn">{w}</div>' for w in warnings)
            + f"{_table(report)}{sections}</body></html>\n")


