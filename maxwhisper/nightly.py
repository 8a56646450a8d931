"""Nightly regression run: benchmark, judge, render. `python -m maxwhisper.nightly --results DIR ...`

1. runs `pytest tests/bench -m "bench and not slow"` with MAXWHISPER_BENCH=full, autosaving every round
   into DIR/full (one subfolder per machine, as pytest-benchmark stores it; `--skip-run` skips this); the
   interleaved cases (tests/bench/test_paired_bench.py) mark each run full or quick, so quick runs saved
   anywhere under DIR form series of their own;
2. judges every case of each series over its whole history (maxwhisper.regression), and against --baseline;
3. writes the dashboard (-o) and, with --github-json, github-action-benchmark JSON.
`--calibrate` instead replays the runs in DIR with injected slowdowns and prints the detection and
false-alarm rates of the rule (maxwhisper.calibrate).
Exit status: 0 clean, 1 a case regressed beyond its threshold or is missing from the latest run (unless
--allow-missing), 2 bad input or a failed benchmark run.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import shlex
import subprocess
import sys

from maxwhisper import dashboard
from maxwhisper.errors import MaxWhisperError

ROOT = pathlib.Path(__file__).resolve().parent.parent
FULL_RUNS = "full"  # the nightly's subfolder of --results


def bench_command(results: pathlib.Path, extra_args: str = "") -> list[str]:
    """The pytest invocation that appends one full run (with its rounds) to `results`/full: stored apart from
    quick runs that `pytest --benchmark-autosave` saves into `results` itself (and judged apart by mode)."""
    return [sys.executable, "-m", "pytest", "tests/bench", "-m", "bench and not slow", "--benchmark-autosave",
            "--benchmark-save-data", f"--benchmark-storage=file://{(results / FULL_RUNS).resolve()}",
            *shlex.split(extra_args)]


def run_benchmarks(results: pathlib.Path, extra_args: str = "") -> int:
    """Run the suite from the repository root; returns pytest's exit status."""
    command = bench_command(results, extra_args)
    print("+ " + shlex.join(command), file=sys.stderr, flush=True)
    return subprocess.run(command, cwd=ROOT, env={**os.environ, "MAXWHISPER_BENCH": "full"}).returncode


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m maxwhisper.nightly", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default=".benchmarks", help="pytest-benchmark storage folder (default .benchmarks)")
    p.add_argument("--baseline", default=None, help="a saved run (file) to compare against as well")
    p.add_argument("--threshold", action="append", default=[], metavar="GROUP=PCT",
                   help="regression threshold per benchmark group, e.g. encoder-paired=5 (defaults: maxwhisper/regression.py)")
    p.add_argument("-o", "--output", default="report.html", help="dashboard HTML (default report.html)")
    p.add_argument("--github-json", default=None, help="also write github-action-benchmark customSmallerIsBetter JSON")
    p.add_argument("--pytest-args", default="",
                   help='extra pytest arguments as one string: --pytest-args "-k tiny" or --pytest-args=-x')
    p.add_argument("--skip-run", action="store_true", help="do not benchmark; compare and render what DIR holds")
    p.add_argument("--allow-missing", action="store_true",
                   help="exit 0 even when a case of the previous runs is missing from the latest run")
    p.add_argument("--calibrate", action="store_true",
                   help="do not benchmark; replay DIR's runs with injected slowdowns and print the rule's rates")
    p.add_argument("--replays", type=int, default=200, help="with --calibrate: replays per slowdown (default 200)")
    return p


def calibrate(args) -> int:
    import importlib.util

    from maxwhisper.calibrate import asv_judge, calibrate as run_calibration, table
    thresholds = dashboard.parse_thresholds(args.threshold)
    calibrations, source = run_calibration(pathlib.Path(args.results), thresholds, replays=args.replays)
    if not calibrations:
        raise MaxWhisperError(f"no series under {args.results} has enough runs to calibrate on")
    print(table(calibrations, source, args.replays))
    if importlib.util.find_spec("asv") is not None:
        print("\nThe same rule with asv's step detection in place of ruptures':\n")
        print(table(run_calibration(pathlib.Path(args.results), thresholds, asv_judge, args.replays, raw=False)[0],
                    source, args.replays))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    results = pathlib.Path(args.results)
    try:
        dashboard.parse_thresholds(args.threshold)  # a typo fails before an hour of benchmarks, not after
        if args.calibrate:
            return calibrate(args)
        bench_status = 0 if args.skip_run else run_benchmarks(results, args.pytest_args)
        if bench_status:
            print(f"maxwhisper.nightly: benchmark run failed (pytest exit {bench_status}); "
                  "rendering what was saved", file=sys.stderr)
        status = dashboard.main(args)
    except MaxWhisperError as exc:
        print(f"maxwhisper.nightly: error: {exc}", file=sys.stderr)
        return 2
    return status or (2 if bench_status else 0)


if __name__ == "__main__":
    sys.exit(main())
