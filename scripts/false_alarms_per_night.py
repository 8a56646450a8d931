"""Expected false alarms per clean nightly: over every judged figure of the committed real runs recorded as the
nightly now runs, the share of random orders of its clean runs that the rule calls on a random night
(calibrate.clean_calls), summed. Runs a day apart are closer to random orders than the minutes-apart order
the sets were recorded in. `--earlier` judges with the thresholds used before 2026-11-27 15:44 UTC.

    python scripts/false_alarms_per_night.py [--replays 1000] [--earlier]
"""
from __future__ import annotations

import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from maxwhisper import calibrate, regression  # noqa: E402
from maxwhisper.results import load_runs, split_series  # noqa: E402

# The Zen 5 EPYC's sets, and the AVX2 EPYC's for the groups no Zen 5 set holds (the compile at 15 rounds, the short
# clip's transcription at 5 rounds: fixtures/bench_runs_quiet's other cases ran with rounds the nightly no longer uses)
SETS = {"bench_runs_zen5_decoder_paired": "", "bench_runs_zen5_decoder_neighbours": "", "bench_runs_zen5_beam5": "",
        "bench_runs_zen5_every_path": "", "bench_runs_zen5_30rounds": "", "bench_runs_compile15": "",
        "bench_runs_quiet": "transcribe", "bench_runs_zen5_standard": "", "bench_runs_zen5_block": ""}
EARLIER = ({("compile-paired", "time"): 20.0, ("decoder-step", "time"): 25.0, ("decoder-step", "peak host memory"): 3.0,
            ("encoder-latency", "time"): 10.0, ("encoder-latency", "peak host memory"): 7.5,
            ("gemm-ceiling", "time"): 10.0}, 25.0)  # and 3% for every interleaved figure


def rates(replays: int) -> list[tuple[float, str, str, str, float]]:
    """(call rate, set, case, figure, threshold) for every judged figure, of the runs the nightly judges it on."""
    out = []
    for name, only in SETS.items():
        runs, _ = load_runs(ROOT / "fixtures" / name)
        for series in split_series(runs).values():
            for key in series[-1].results:
                if only not in key or (found := calibrate.judged_figures(series, key)) is None:
                    continue
                quiet, judged = found
                group, interleaved = quiet[-1][1].group, judged["time"][-1].interleaved
                for metric, figs in judged.items():
                    threshold = regression.threshold_pct(group, metric, interleaved=interleaved)
                    out.append((calibrate.clean_calls([f.judged for f in figs], threshold, replays=replays), name,
                                key.split("::")[-1], metric, threshold))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replays", type=int, default=1000)
    p.add_argument("--earlier", action="store_true", help="the thresholds before 2026-11-27 15:44 UTC")
    args = p.parse_args()
    if args.earlier:
        regression.THRESHOLDS_PCT.clear()
        regression.THRESHOLDS_PCT.update(EARLIER[0])
        regression.BLOCK_THRESHOLD_PCT = EARLIER[1]
    found = sorted(rates(args.replays), reverse=True)
    for rate, name, case, metric, threshold in found[:10]:
        print(f"{rate:6.1%}  {case} · {metric} (>{threshold:g}%) · {name}")
    per_figure: dict[tuple[str, str], list[float]] = {}  # a figure two sets hold counts once, at their mean
    for rate, _, case, metric, _ in found:
        per_figure.setdefault((case, metric), []).append(rate)
    expected = sum(sum(r) / len(r) for r in per_figure.values())
    print(f"{len(per_figure)} judged figures; expected false alarms per clean nightly: {expected:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
