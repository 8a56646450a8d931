"""A captured step's device timeline from Nsight Systems: each kernel and copy of one replayed step in time
order, with the idle gap before it, which Nsight Compute (one kernel at a time) cannot show.

    nsys profile --trace=cuda --cuda-graph-trace=node -o /tmp/step python3 scripts/gpu_step_profile.py gpu warps captured
    nsys stats --report cuda_gpu_trace --format csv -o /tmp/step /tmp/step.nsys-rep
    python3 scripts/gpu_timeline.py /tmp/step_cuda_gpu_trace.csv

The trace's rows (kernels and memory copies, every step of the run) split into bursts wherever the device
sat idle longer than STEP_GAP_NS (the host's turn between two steps). A replayed step is a burst with the
most common number of kernels (the breakdown replays the step 100 times, with or without its input copies in
the burst, and times copies alone besides); of those, the one whose kernels span the median time is printed,
every row of its burst, then where its kernels' span goes: busy, and idle between kernels.
`scripts/gpu_offline.sh` runs it where nsys is installed.
"""
import collections
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


def idle_before(rows: list[Row]) -> list[int]:
    """Each row's idle time (ns) since every row before it had ended (0 for the first)."""
    out, end = [], rows[0].start if rows else 0
    for row in rows:
        out.append(max(0, row.start - end))
        end = max(end, row.end)
    return out


def steps(rows: list[Row], gap_ns: int = STEP_GAP_NS) -> list[list[Row]]:
    """The rows split wherever the device was idle longer than gap_ns."""
    out: list[list[Row]] = []
    for row, idle in zip(rows, idle_before(rows)):
        if out and idle <= gap_ns:
            out[-1].append(row)
        else:
            out.append([row])
    return out


def kernels(step: list[Row]) -> list[Row]:
    """A burst's kernel rows: every row but the memory copies and sets."""
    return [r for r in step if "memcpy" not in r.name.lower() and "memset" not in r.name.lower()]


def span(rows: list[Row]) -> int:
    return max(r.end for r in rows) - rows[0].start


def replayed(bursts: list[list[Row]]) -> list[list[Row]]:
    """The bursts with the most common nonzero number of kernels (the larger count on a tie): the replays."""
    sizes = [len(kernels(b)) for b in bursts]
    counts = collections.Counter(n for n in sizes if n)
    if not counts:
        return []
    common = max(counts.values())
    launches = max(n for n, c in counts.items() if c == common)
    return [b for b, n in zip(bursts, sizes) if n == launches]


def report(step: list[Row], count: int) -> str:
    """One burst's rows (start from its first, duration, idle before), then its kernels' totals."""
    lines = [f"the replay of median kernel span among {count} ({len(step)} rows, {len(kernels(step))} kernels):",
             f"{'start us':>9} {'took us':>8} {'idle us':>8}  name"]
    for row, idle in zip(step, idle_before(step)):
        lines.append(f"{(row.start - step[0].start) / 1e3:9.1f} {row.duration / 1e3:8.1f} {idle / 1e3:8.1f}  "
                     f"{row.name[:90]}")
    ks = kernels(step)
    idle, total = sum(idle_before(ks)), span(ks)
    lines.append(f"kernels: span {total / 1e3:.1f} us, busy {(total - idle) / 1e3:.1f} us, idle between them "
                 f"{idle / 1e3:.1f} us ({idle / max(1, len(ks) - 1) / 1e3:.2f} us each); the burst {span(step) / 1e3:.1f} us")
    return "\n".join(lines)


def main(path: str) -> None:
    found = replayed(steps(read_rows(path)))
    if not found:
        sys.exit(f"{path}: no kernels in the trace")
    spans = [span(kernels(s)) for s in found]
    print(report(found[spans.index(statistics.median_low(spans))], len(found)))


if __name__ == "__main__":
    main(*sys.argv[1:])
