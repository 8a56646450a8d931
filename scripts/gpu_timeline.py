"""A captured step's device timeline from Nsight Systems: each kernel and copy of one replayed step in time
order, with the idle gap before it, which Nsight Compute (one kernel at a time) cannot show.

    nsys profile --trace=cuda --cuda-graph-trace=node -o /tmp/step python3 scripts/gpu_step_profile.py gpu warps captured
    nsys stats --report cuda_gpu_trace --format csv -o /tmp/step /tmp/step.nsys-rep
    python3 scripts/gpu_timeline.py /tmp/step_cuda_gpu_trace.csv

The trace's rows (kernels and memory copies, every step of the run) split into steps wherever the device sat
idle longer than STEP_GAP_NS (the host's turn between two steps). Of the whole replayed steps (those with
nearly the most rows: the breakdown also times copies alone), the one of median span is printed, then where
its span goes: busy, and idle between its rows. `scripts/gpu_offline.sh` runs it where nsys is installed.
"""
import csv
import statistics
import sys
from dataclasses import dataclass

STEP_GAP_NS = 15_000  # within a replay the rows follow each other by a few us; the host's turn takes longer


@dataclass
class Row:
    start: int  # ns
    duration: int  # ns
    name: str

    @property
    def end(self) -> int:
        return self.start + self.duration


def read_rows(path: str) -> list[Row]:
    """The trace's rows, by start time: nsys's csv columns found by their names' beginnings."""
    with open(path, newline="") as f:
        lines = [line for line in f if line.strip()]
    header = next(i for i, line in enumerate(lines) if line.startswith('"Start') or line.startswith("Start"))
    table = list(csv.DictReader(lines[header:]))
    column = {key: next(c for c in table[0] if c.startswith(key)) for key in ("Start", "Duration", "Name")}
    rows = [Row(int(float(r[column["Start"]])), int(float(r[column["Duration"]])), r[column["Name"]]) for r in table]
    return sorted(rows, key=lambda r: r.start)


def steps(rows: list[Row], gap_ns: int = STEP_GAP_NS) -> list[list[Row]]:
    """The rows split wherever the device was idle longer than gap_ns."""
    out: list[list[Row]] = []
    for row in rows:
        if out and row.start - max(r.end for r in out[-1]) <= gap_ns:
            out[-1].append(row)
        else:
            out.append([row])
    return out


def span(step: list[Row]) -> int:
    return max(r.end for r in step) - step[0].start


def report(step: list[Row], count: int) -> str:
    """One step's rows (start from the step's first, duration, idle before), then its totals."""
    lines = [f"the step of median span among {count} ({len(step)} rows):",
             f"{'start us':>9} {'took us':>8} {'idle us':>8}  name"]
    end, idle = step[0].start, 0
    for row in step:
        before = max(0, row.start - end)
        idle += before
        lines.append(f"{(row.start - step[0].start) / 1e3:9.1f} {row.duration / 1e3:8.1f} {before / 1e3:8.1f}  {row.name[:90]}")
        end = max(end, row.end)
    total = span(step)
    lines.append(f"span {total / 1e3:.1f} us: busy {(total - idle) / 1e3:.1f} us, idle between rows {idle / 1e3:.1f} us "
                 f"({len(step)} rows, {idle / max(1, len(step) - 1) / 1e3:.2f} us idle each)")
    return "\n".join(lines)


def main(path: str) -> None:
    found = steps(read_rows(path))
    most = max(len(s) for s in found)
    found = [s for s in found if len(s) >= 0.9 * most and len(s) > 1]  # whole steps, not a copy timed alone
    if not found:
        sys.exit(f"{path}: no step of more than one row")
    spans = [span(s) for s in found]
    median = statistics.median_low(spans)
    print(report(found[spans.index(median)], len(found)))


if __name__ == "__main__":
    main(*sys.argv[1:])
