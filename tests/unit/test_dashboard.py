"""Benchmark dashboard and nightly: regression rules, robust loading, machine separation, outputs."""
from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import pathlib
import re
import shutil

import numpy as np
import pytest

from conftest import ROOT, SAMPLES
from maxwhisper import dashboard, nightly, regression, render
from maxwhisper.errors import MaxWhisperError

pytestmark = pytest.mark.unit

CPU_FOLDER = "Linux-CPython-3.11-64bit"
PLANTED = "tests/bench/test_encoder_bench.py::test_encoder_latency[max-cpu-float32-b4-bundled]"
_spec = importlib.util.spec_from_file_location("make_bench_samples", ROOT / "fixtures" / "make_bench_samples.py")
samples = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(samples)

CASE = "test_encoder_latency[max-cpu-float32-b1-bundled]"
EXTRA = {"impl": "max", "device": "cpu", "dtype": "float32", "batch": 1, "model": "tiny.en",
         "flops": samples.TINY_FLOPS, "peak_rss_mb": 600.0}


def write_run(folder: pathlib.Path, night: int, medians: dict[str, float], *, noise: float = 0.03,
              rounds: int = 12, saved_rounds: bool = True, machine: dict = samples.CPU_MACHINE,
              group: str = "encoder-latency", extras: dict[str, dict] | None = None) -> pathlib.Path:
    """One saved run on `night` (days after the samples' start) holding the given case medians (seconds)."""
    rng = np.random.default_rng(night)
    entries = [samples.bench_entry(name, group, median, {**EXTRA, **(extras or {}).get(name, {})}, rng,
                                   rounds=rounds, noise=noise)
               for name, median in medians.items()]
    for entry in entries if not saved_rounds else ():
        del entry["stats"]["data"]
    run = samples.run_json(entries, samples.START + dt.timedelta(days=night), samples.commit_id(night), machine)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / samples.file_name(night + 1, run)
    path.write_text(json.dumps(run))
    return path


def history(tmp_path: pathlib.Path, medians: list[float], case: str = CASE, extra=None, **kwargs) -> pathlib.Path:
    """A results dir with one run per median of the single case `case`, each night's extra info (over EXTRA)
    `extra(night)` where given; returns the results dir."""
    for night, median in enumerate(medians):
        extras = {case: extra(night)} if extra else None
        write_run(tmp_path / "results" / CPU_FOLDER, night, {case: median}, extras=extras, **kwargs)
    return tmp_path / "results"


def only_row(results: pathlib.Path, **kwargs) -> dashboard.Row:
    (row,) = dashboard.build_report(results, **kwargs).rows
    return row


def cli_args(results, tmp_path, *extra: str) -> argparse.Namespace:
    """What `python -m maxwhisper dashboard` hands to dashboard.main."""
    from maxwhisper.cli import parser
    return parser().parse_args(["dashboard", str(results), "-o", str(tmp_path / "report.html"), *extra])


@pytest.fixture
def sample_dir(tmp_path) -> pathlib.Path:
    return shutil.copytree(SAMPLES, tmp_path / "samples")


# --- regression rules (the rule itself: tests/unit/test_regression.py) ----------------------------

QUIET = [1.0, 1.004, 0.997, 1.002, 0.999, 1.003, 0.998, 1.001]  # 0.3% run-to-run spread, 8 nights


def test_a_20pct_step_after_a_quiet_history_is_flagged(tmp_path, capsys):
    results = history(tmp_path, QUIET + [1.2])
    row = only_row(results)
    # measured 0.1994 (the step read against QUIET's median): 0.01 is a step read as 20%, not as 19 or 21
    assert row.regressed and row.change == pytest.approx(0.2, abs=0.01) and "step up" in row.rule
    assert row.normalisation == "none (raw seconds)"  # a lone case: nothing in the run measured the machine
    assert dashboard.main(cli_args(results, tmp_path)) == 1
    assert "REGRESSED" in capsys.readouterr().out


def test_a_1pct_change_is_below_threshold(tmp_path, capsys):
    results = history(tmp_path, QUIET + [1.01])
    row = only_row(results)
    assert not row.regressed and row.rule == "time: no step up; peak host memory: no step up"
    assert dashboard.main(cli_args(results, tmp_path)) == 0


def test_a_short_history_is_not_judged(tmp_path):
    row = only_row(history(tmp_path, [1.0, 1.0, 2.0]))
    assert not row.regressed and row.rule.startswith("time: history too short")


def busy_history(tmp_path, medians: list[float], busy: set[int], memory: dict[int, float] | None = None,
                 unrecorded: int = 0) -> pathlib.Path:
    """CASE's runs: those at the nights in `busy` beside a job that took 15% of the CPUs, the others at 0.1%, the
    first `unrecorded` from before runs recorded it; peak memory 600 MB unless `memory` says otherwise."""
    for night, median in enumerate(medians):
        extra = {"peak_rss_mb": (memory or {}).get(night, 600.0)}
        if night >= unrecorded:
            extra["neighbours_cpu_share"] = 0.15 if night in busy else 0.001
        write_run(tmp_path / "results" / CPU_FOLDER, night, {CASE: median}, extras={CASE: extra})
    return tmp_path / "results"


def test_a_busy_latest_run_is_shown_and_its_times_are_not_judged(tmp_path, capsys):
    results = busy_history(tmp_path, QUIET + [1.2], busy={len(QUIET)}, unrecorded=4)
    row = only_row(results)
    assert not row.regressed and row.state == "BUSY"
    assert row.rule.startswith("times not judged: other processes used 15% of the CPUs during this run (limit 2%)")
    assert dashboard.main(cli_args(results, tmp_path)) == 0
    out = capsys.readouterr().out
    assert "0 regressions, 0 missing from the latest run, 1 not judged (busy)" in out and "\nBUSY " in out
    assert "their times were not judged" in (tmp_path / "report.html").read_text()


def test_a_run_beside_another_process_on_the_gpu_is_shown_and_its_times_are_not_judged(tmp_path):
    """paired.GpuNeighbours: another process's kernels on the case's GPU (35% of its SMs at most) make the run busy."""
    row = only_row(history(tmp_path, QUIET + [1.2], extra=lambda night: {
        "peak_rss_mb": 600.0, "neighbours_cpu_share": 0.001, "neighbours_gpu_sm_pct": 35.0 if night == len(QUIET) else 0.0}))
    assert not row.regressed and row.state == "BUSY"
    assert row.rule.startswith("times not judged: another process used up to 35% of the GPU's SMs during this run")


def test_memory_is_judged_on_a_busy_run(tmp_path):
    """A neighbour moves this process's times, not its memory: a 20% memory step on a busy night is called."""
    row = only_row(busy_history(tmp_path, QUIET + [1.2], busy={len(QUIET)}, memory={len(QUIET): 720.0}))
    assert row.regressed and row.rule.startswith("times not judged") and "peak host memory: step up" in row.rule


def test_busy_runs_leave_the_history_so_a_step_they_hid_is_called_on_the_first_quiet_run(tmp_path):
    slow = [1.2] * 4  # a 20% step that landed while the machine was busy for three nights
    row = only_row(busy_history(tmp_path, QUIET + slow, busy={8, 9, 10}, unrecorded=4))
    assert row.regressed and "step up" in row.rule and row.change == pytest.approx(0.2, abs=0.01)
    assert "3 busy runs left out" in row.rule
    # judged with the busy runs in, the step began three runs back: old news, not red
    assert not only_row(busy_history(tmp_path / "all", QUIET + slow, busy=set())).regressed


REPLAYED = "test_decoder_step[max-warps-captured-gpu-b1-cache100]"


def replay_history(tmp_path, medians: list[float], launched: set[int]) -> pathlib.Path:
    """REPLAYED's runs on a GPU: its capture failed on the nights in `launched`, so their steps ran launched."""
    return history(tmp_path, medians, REPLAYED, group="decoder-step", extra=lambda night: {
        "impl": "max-warps-captured", "device": "gpu", "captured": night not in launched,  # as saved before
        # the error was kept to one line: a multi-line one stays one line in the log
        "capture_error": "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED\n  at capture" if night in launched else None})


def test_a_captured_case_whose_capture_failed_is_called_on_its_first_night(tmp_path, capsys):
    """Its eager steps are no replayed step's time: never judged as one, and the failure itself is the call, even
    before the history is long enough to judge (here its second run)."""
    results = replay_history(tmp_path, [1.0, 1.6], launched={1})
    row = only_row(results)
    assert row.regressed and row.state == "REGRESSED" and row.change is None
    assert row.rule.startswith("capture: its steps were launched, not replayed: the capture failed "
                               "(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED)")
    assert all(j.call.rule == "not judged (not replayed run)" for j in row.judged)
    assert dashboard.main(cli_args(results, tmp_path, "--github-json", str(tmp_path / "bench.json"))) == 1
    (line,) = [line for line in capsys.readouterr().out.splitlines() if REPLAYED in line]
    assert line.startswith("REGRESSED n/a      " + REPLAYED) and line.endswith("(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED)")
    page = (tmp_path / "report.html").read_text()
    assert f"{REPLAYED} on {row.machine.short} n/a (capture: its steps were launched" in page and "inf%" not in page
    assert json.loads((tmp_path / "bench.json").read_text()) == []  # the launched time is no figure of this case


def test_launched_runs_leave_a_captured_case_s_history(tmp_path):
    """A night whose capture failed (1.6x: the launched step) is no level of the replayed step's: the nights after
    it are judged without it, so a clean night is quiet and a 25% slower one is called."""
    quiet = only_row(replay_history(tmp_path / "quiet", QUIET + [1.6, 1.001], launched={len(QUIET)}))
    assert not quiet.regressed and quiet.rule == "time: no step up, 1 not replayed run left out; " \
                                                 "peak host memory: no step up, 1 not replayed run left out"
    pinned = next((tmp_path / "quiet" / "results" / CPU_FOLDER).glob(f"{len(QUIET) + 1:04d}_*.json"))
    assert only_row(tmp_path / "quiet" / "results", baseline=str(pinned)).vs_baseline.rule == \
        f"not compared: pinned {samples.commit_id(len(QUIET))[:7]} timed launched steps: its capture failed"
    slowed = only_row(replay_history(tmp_path / "slowed", QUIET + [1.6, 1.25], launched={len(QUIET)}))
    assert slowed.regressed and slowed.rule.startswith("time: step up") and slowed.not_replayed is None
    assert slowed.change == pytest.approx(0.25, abs=0.01)  # measured +24.9%: read against QUIET's level


@pytest.mark.parametrize("impl, called", [("max-gpu-warps", True), ("max", True), ("gpu", False),
                                          ("faster-whisper-int8", False)])
def test_a_max_transcript_that_differs_from_openai_whisper_is_called_and_its_time_still_judged(tmp_path, impl, called):
    """The GPU MAX paths' benchmark keeps a run whose text moved (bounded by its word error rate) and records
    exact_text: on a MAX path that is a correctness regression, called on its night; PyTorch's float16 and
    faster-whisper may move a word, and are not."""
    row = only_row(history(tmp_path, QUIET + [1.0], f"test_transcribe_clip[{impl}]", group="transcribe",
                           extra=lambda night: {"impl": impl, "device": "gpu" if "gpu" in impl else "cpu",
                                                "exact_text": night < len(QUIET)}))
    assert row.regressed == called and row.state == ("REGRESSED" if called else "ok")
    assert row.rule.startswith("text: the transcript differs from openai-whisper's float32 text") == called
    assert [j.call.rule for j in row.judged if j.metric == "time"] == ["no step up"]


def test_calibration_leaves_out_the_runs_whose_capture_failed(tmp_path):
    """calibrate.judged_figures, which the thresholds are chosen on: a launched night is no clean run of the case."""
    from maxwhisper import calibrate
    from maxwhisper.results import load_runs, split_series
    runs, _ = load_runs(replay_history(tmp_path, QUIET + [1.6, 1.001], launched={len(QUIET)}))
    (series,) = split_series(runs).values()
    quiet, judged = calibrate.judged_figures(series, next(iter(series[-1].results)))
    assert len(quiet) == len(QUIET) + 1 and all(result.not_replayed is None for _, result in quiet)
    assert {len(figs) for figs in judged.values()} == {len(QUIET) + 1} and max(judged["time"], key=lambda f: f.value).value < 1.1


def test_group_threshold_override_applies_to_its_group_only(tmp_path):
    results = history(tmp_path, QUIET + [1.2])
    assert dashboard.main(cli_args(results, tmp_path, "--threshold", "encoder-latency=30")) == 0
    assert only_row(results, thresholds={"encoder-latency": 30}).rule.startswith("time: no step up")
    assert dashboard.main(cli_args(results, tmp_path, "--threshold", "compile=30")) == 1


@pytest.mark.parametrize("spec", ["encoder-latency", "encoder-latency=fast", "=10", "compile=-5"])
def test_bad_threshold_is_a_one_line_error(spec):
    with pytest.raises(MaxWhisperError, match="GROUP=PCT"):
        dashboard.parse_thresholds([spec])


def test_baseline_is_compared_on_the_same_hardware_only(tmp_path):
    results = history(tmp_path, [1.0, 1.02, 1.04, 1.06, 1.08, 1.1])  # 2% a night: 10% above the pinned first run
    pinned = next((results / CPU_FOLDER).glob("0001_*.json"))
    row = only_row(results, baseline=str(pinned))
    assert row.vs_baseline.regressed and row.vs_baseline.change == pytest.approx(0.1)
    assert "vs pinned " + samples.commit_id(0)[:7] in row.rule
    elsewhere = write_run(tmp_path / "other", 0, {CASE: 1.0}, machine={**samples.CPU_MACHINE, "node": "laptop"})
    report = dashboard.build_report(results, baseline=str(elsewhere))
    assert report.rows[0].vs_baseline is None and "matches no series" in report.notes[0]


def test_a_busy_pinned_baseline_is_not_compared(tmp_path):
    results = busy_history(tmp_path, [1.0, 1.02, 1.04, 1.06, 1.08, 1.1], busy={0})
    row = only_row(results, baseline=str(next((results / CPU_FOLDER).glob("0001_*.json"))))
    assert not row.vs_baseline.regressed and "not compared: pinned" in row.rule


def test_a_case_missing_now_whose_last_run_was_busy_is_still_missing(tmp_path):
    folder = tmp_path / "results" / CPU_FOLDER
    busy_history(tmp_path, QUIET, busy={len(QUIET) - 1})
    write_run(folder, len(QUIET), {"test_other_case": 1.0})
    row = next(r for r in dashboard.build_report(tmp_path / "results").rows if r.latest.name == CASE)
    assert row.missing and row.state == "MISSING" and row.busy_reason is None


def test_a_case_missing_from_the_latest_run_is_reported_and_fails_unless_allowed(tmp_path, capsys):
    folder = tmp_path / "results" / CPU_FOLDER
    for night in range(4):
        write_run(folder, night, {CASE: 1.0, "test_gone": 1.0})
    write_run(folder, 4, {CASE: 1.0})
    report = dashboard.build_report(folder.parent)
    (gone,) = report.missing
    assert gone.latest.name == "test_gone" and not gone.regressed and gone.rule.startswith("missing from the latest")
    assert dashboard.main(cli_args(folder.parent, tmp_path)) == 1
    assert re.search(r"MISSING .*test_gone", capsys.readouterr().out)
    assert "missing from the latest run: test_gone" in (tmp_path / "report.html").read_text()
    assert nightly.main(["--results", str(folder.parent), "-o", str(tmp_path / "n.html"), "--skip-run",
                         "--allow-missing"]) == 0
    assert not any("test_gone" in entry["name"] for entry in dashboard.github_benchmarks(report))


def test_quick_and_full_runs_are_separate_series(tmp_path):
    folder = tmp_path / "results" / CPU_FOLDER
    for night, median in enumerate(QUIET):
        write_run(folder, night, {CASE: median}, extras={CASE: {"mode": "full"}})
    write_run(folder, 8, {CASE: 0.4}, extras={CASE: {"mode": "quick"}})  # fewer rounds, another workload
    write_run(folder, 9, {CASE: 1.2}, extras={CASE: {"mode": "full"}})
    report = dashboard.build_report(folder.parent)
    assert sorted(machine.mode for machine in report.series) == ["full", "quick"]
    full = next(row for row in report.rows if row.machine.mode == "full")
    assert full.regressed and len(full.history) == 9


def test_memory_is_judged(tmp_path):
    results = history(tmp_path, QUIET + [1.0])
    last = max((results / CPU_FOLDER).glob("*.json"))
    run = json.loads(last.read_text())
    run["benchmarks"][0]["extra_info"]["peak_rss_mb"] = 600.0 * 1.15
    last.write_text(json.dumps(run))
    row = only_row(results)
    assert row.regressed and row.rule.startswith("peak host memory: step up +15.0%")


def device_memory_history(tmp_path, nights_mb: list[float]) -> pathlib.Path:
    """CASE on a GPU box, its device memory above its start `nights_mb` on its nights (its time steady)."""
    for night, (median, mb) in enumerate(zip(QUIET + [1.0] * len(nights_mb), nights_mb)):
        write_run(tmp_path / "results" / CPU_FOLDER, night, {CASE: median}, extras={CASE: {"peak_device_mb": mb}})
    return tmp_path / "results"


@pytest.mark.parametrize("latest_mb, called", [(4.0, False), (40.0, False), (500.0, True)])
def test_device_memory_is_judged_from_zero_above_its_floor(tmp_path, latest_mb, called):
    """A case's device memory reads 0 MB night after night (as the H200's step cases do): a step that starts
    taking 500 MB is called, a few MB of allocator pages or two 20 MB segments are not (before the floor, 0 MB
    figures were dropped, so the 500 MB had no history)."""
    row = only_row(device_memory_history(tmp_path, [0.0] * len(QUIET) + [latest_mb]))
    assert row.regressed is called
    device = next(j for j in row.judged if j.metric == "peak device memory")
    assert device.values == [0.0] * len(QUIET) + [latest_mb] and device.call.regressed is called
    if called:
        assert "peak device memory: step up to 500 MB from run 9 of 9, from under the 64 MB floor" in row.rule


def test_a_step_from_above_the_floor_is_named_as_a_change(tmp_path):
    """A case under the floor once, long ago, then at 200 MB: its step to 300 MB is +50% from 200 MB."""
    row = only_row(device_memory_history(tmp_path, [0.0] + [200.0] * 7 + [300.0]))
    assert row.regressed and "peak device memory: step up +50.0% from run 9 of 9" in row.rule and "floor" not in row.rule


# --- loading ------------------------------------------------------------------------------------

UNREADABLE = {
    "truncated": b'{"machine_info": {"node": "x"}, "benchmarks": [{"name": "a", "st',
    "empty": b"",
    "a list": b"[1, 2]",
    "no benchmarks": b'{"machine_info": {}}',
    "benchmarks not a list": b'{"benchmarks": "fast"}',
    "no runs inside": b'{"benchmarks": []}',
    "median not a number": b'{"benchmarks": [{"name": "a", "stats": {"median": "fast", "min": 1, "max": 2}}]}',
    "median missing": b'{"benchmarks": [{"name": "a", "stats": {"min": 1, "max": 2}}]}',
    "NaN median": b'{"benchmarks": [{"name": "a", "stats": {"median": NaN, "min": 1, "max": 2}}]}',
    "entry not a dict": b'{"benchmarks": [7]}',
    "not utf-8": b'\xff\xfe{"benchmarks"',
    "deeply nested": b"[" * 100_000,
}


@pytest.mark.parametrize("content", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_unreadable_files_are_skipped_and_named(tmp_path, capsys, content):
    results = history(tmp_path, [1.0, 1.01])
    (results / CPU_FOLDER / "0003_bad.json").write_bytes(content)
    assert dashboard.main(cli_args(results, tmp_path)) == 0
    assert "0003_bad.json" in capsys.readouterr().err
    assert "0003_bad.json" in (tmp_path / "report.html").read_text()


def test_results_without_readable_runs_are_a_user_error(tmp_path):
    with pytest.raises(MaxWhisperError, match="does not exist"):
        dashboard.build_report(tmp_path / "nowhere")
    (tmp_path / "0001_corrupt.json").write_text("{")
    with pytest.raises(MaxWhisperError, match="no readable.*save some with `make bench`"):
        dashboard.build_report(tmp_path)
    with pytest.raises(MaxWhisperError, match="--baseline"):
        dashboard.build_report(SAMPLES, baseline=str(tmp_path / "0001_corrupt.json"))


@pytest.mark.parametrize("argv, message", [
    (["{file}", "-o", "{tmp}/r.html"], "results directory {file} is a file; pass the directory holding the saved runs"),
    ([SAMPLES, "-o", "{tmp}"], "-o {tmp} is a directory; name the file, e.g. {tmp}/report.html"),
    ([SAMPLES, "-o", "{file}/r.html"], "-o {file}/r.html: {file} is a file, not a directory"),
    ([SAMPLES, "-o", "{tmp}/r.html", "--github-json", "{tmp}"], "--github-json {tmp} is a directory; name the file"),
    ([SAMPLES, "-o", "{tmp}/r.html", "--github-json", "{file}/g.json"], "--github-json {file}/g.json: {file} is a file, not a directory"),
], ids=["results-file", "output-dir", "output-under-file", "github-json-dir", "github-json-under-file"])
def test_bad_paths_are_one_line_errors(tmp_path, capsys, argv, message):
    from maxwhisper import cli
    (file := tmp_path / "run.json").write_text("{}")
    argv, message = ([str(a).format(tmp=tmp_path, file=file) for a in argv], message.format(tmp=tmp_path, file=file))
    assert cli.main(["dashboard", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("maxwhisper: error: ") and err.count("\n") == 1 and message in err, err


def test_old_format_files_parse(tmp_path):
    """pytest-benchmark 3.x: no extra_info, iqr, data, datetime or commit time; name carries the date."""
    path = write_run(tmp_path / "results" / CPU_FOLDER, 0, {CASE: 1.0})
    run = json.loads(path.read_text())
    del run["datetime"], run["commit_info"]["time"], run["commit_info"]["author_time"]
    for entry in run["benchmarks"]:
        del entry["extra_info"], entry["stats"]["iqr"], entry["stats"]["data"], entry["stats"]["ops"]
    path.write_text(json.dumps({**run, "version": "3.2.3"}))
    old = dashboard.parse_run(path)
    result = old.results[next(iter(old.results))]
    assert result.median == pytest.approx(1.0) and result.data is None and result.extra == {}
    quartiles = run["benchmarks"][0]["stats"]
    assert result.spread == pytest.approx(quartiles["q3"] - quartiles["q1"])  # median 1.0: IQR/median = IQR
    assert old.when == samples.START
    for night in range(1, 8):
        write_run(tmp_path / "results" / CPU_FOLDER, night, {CASE: 1.3 if night == 7 else 1.0})
    assert only_row(tmp_path / "results").regressed  # old and new runs form one series


def test_flat_stats_and_missing_quartiles_use_stddev(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"benchmarks": [{"name": "a", "group": None, "median": 2.0, "min": 1.0, "max": 3.0,
                                                "stddev": 0.5, "mean": 2.0, "rounds": 4}]}))
    result = dashboard.parse_run(path).results["a"]
    assert (result.median, result.spread, result.group) == (2.0, 0.25, "")


def test_machines_are_kept_apart(tmp_path):
    folder = tmp_path / "results" / CPU_FOLDER
    write_run(folder, 0, {CASE: 1.0})
    write_run(folder, 1, {CASE: 0.5}, machine={**samples.CPU_MACHINE, "node": "fast-box"})  # same folder
    write_run(tmp_path / "results" / "Linux-CPython-3.11-64bit-b", 2, {CASE: 0.4})  # same info, other folder
    write_run(folder, 3, {CASE: 1.02})
    report = dashboard.build_report(folder.parent)
    assert len(report.series) == 3 and not report.regressions
    by_node = {(row.machine.node, row.machine.folder): row for row in report.rows}
    slow = by_node[("bench-cpu-01", CPU_FOLDER)]
    assert [run.short for run, _ in slow.history] == [samples.commit_id(0)[:7], samples.commit_id(3)[:7]]
    assert by_node[("fast-box", CPU_FOLDER)].rule.startswith("time: history too short (1 of")
    assert [run.machine for run, _ in slow.history] == [slow.machine] * 2


# --- outputs ------------------------------------------------------------------------------------

def test_sample_runs_flag_exactly_the_planted_slowdown(sample_dir, tmp_path, capsys):
    report = dashboard.build_report(sample_dir)
    assert [row.latest.key for row in report.regressions] == [PLANTED]
    # measured 0.188: the planted 20% under the samples' 3% noise, read against the same run's PyTorch partner
    assert report.regressions[0].change == pytest.approx(0.2, abs=0.03)
    assert [path.name for path, _ in report.skipped] == ["0005_corrupt.json"]
    assert dashboard.main(cli_args(sample_dir, tmp_path)) == 1
    out = capsys.readouterr().out
    assert re.search(r"REGRESSED\s+\+1[789]\.\d% .*max-cpu-float32-b4.*vs PyTorch partner \(same run\).*step up", out)


def test_html_is_self_contained(sample_dir, tmp_path):
    dashboard.main(cli_args(sample_dir, tmp_path))
    page = (tmp_path / "report.html").read_text()
    for external in ("http://", "https://", "<script", "<link", "@import", "url(", "<img", "<iframe"):
        assert external not in page, external
    assert page.count("<svg") >= 10 and "<polyline" in page and 'class="band"' in page
    assert page.count('<tr class="regressed"') == 1 and "0005_corrupt.json" in page


def test_summary_table_shows_gflops_and_device_memory(sample_dir):
    rows = {row.latest.name: row for row in dashboard.build_report(sample_dir).rows}
    gpu = rows["test_encoder_latency[max-gpu-bfloat16-b8-bundled]"]
    assert gpu.latest.gflops == pytest.approx(8 * samples.TINY_FLOPS / gpu.latest.median / 1e9)
    assert gpu.latest.number("peak_device_mb") > 0 and rows["test_compile_time[warm]"].latest.gflops is None


def test_max_torch_ratio_pairs_runs_by_device_dtype_batch_model(sample_dir):
    runs = dashboard.build_report(sample_dir).series
    cpu_runs = next(runs for machine, runs in runs.items() if machine.folder == CPU_FOLDER)
    ratios = render.max_torch_ratios(cpu_runs)
    assert sorted(ratios) == ["cpu float32 batch 1 tiny.en", "cpu float32 batch 4 tiny.en"]  # bf16 has no torch twin
    last = {r.name: r.median for r in cpu_runs[-1].results.values()}
    assert ratios["cpu float32 batch 4 tiny.en"][-1] == pytest.approx(
        last["test_encoder_latency[max-cpu-float32-b4-bundled]"]
        / last["test_encoder_latency[torch-cpu-float32-b4-bundled]"])


def test_github_json_has_the_custom_smaller_is_better_shape(sample_dir, tmp_path):
    out = tmp_path / "bench.json"
    dashboard.main(cli_args(sample_dir, tmp_path, "--github-json", str(out)))
    entries = json.loads(out.read_text())
    assert isinstance(entries, list) and len({e["name"] for e in entries}) == len(entries)
    for entry in entries:
        assert {"name", "unit", "value"} <= set(entry) <= {"name", "unit", "value", "range", "extra"}
        assert entry["unit"] in ("ms", "MB") and isinstance(entry["value"], float) and entry["value"] > 0
    latency = [e for e in entries if e["unit"] == "ms"]
    assert len(latency) == 9  # each machine's latest run only
    planted = next(e for e in latency if "max-cpu-float32-b4" in e["name"])
    latest = dashboard.parse_run(next((sample_dir / CPU_FOLDER).glob("0007_*.json"))).results[PLANTED]
    assert planted["value"] == pytest.approx(latest.median * 1e3)
    assert any(e["name"].endswith("peak device memory") for e in entries)


# --- nightly ------------------------------------------------------------------------------------

def test_nightly_skip_run_exits_1_on_the_regressed_samples_and_0_on_a_clean_set(sample_dir, tmp_path, capsys):
    args = ["--results", str(sample_dir), "-o", str(tmp_path / "nightly.html"), "--skip-run"]
    assert nightly.main(args) == 1
    assert "step up" in capsys.readouterr().out
    for path in sample_dir.rglob("0004_*.json"):
        path.unlink()
    assert nightly.main(args) == 0 and (tmp_path / "nightly.html").exists()


def test_nightly_runs_the_bench_suite_with_autosave(sample_dir, tmp_path, monkeypatch):
    calls = []

    def fake_run(command, cwd, env):
        calls.append((command, cwd, env))
        return argparse.Namespace(returncode=pytest_status)

    monkeypatch.setattr(nightly.subprocess, "run", fake_run)
    for path in sample_dir.rglob("0004_*.json"):
        path.unlink()
    args = ["--results", str(sample_dir), "-o", str(tmp_path / "n.html"), "--pytest-args", "-k 'tiny and cpu'"]
    pytest_status = 0
    assert nightly.main(args) == 0
    pytest_status = 1
    assert nightly.main(args) == 2  # a failed benchmark run fails the night even with no regression
    command, cwd, env = calls[0]
    assert command[1:] == ["-m", "pytest", "tests/bench", "-m", "bench and not slow", "--benchmark-autosave",
                           "--benchmark-save-data", f"--benchmark-storage=file://{(sample_dir / 'full').resolve()}",
                           "-k", "tiny and cpu"]
    assert cwd == ROOT and env["MAXWHISPER_BENCH"] == "full"
    assert nightly.main(args + ["--threshold", "oops"]) == 2 and len(calls) == 2  # checked before running


TORCH_CASE = "test_encoder_latency[torch-cpu-float32-b1-bundled]"
PAIR = {TORCH_CASE: {"impl": "torch"}}


@pytest.mark.parametrize("torch_slowdown, flagged", [(1.30, False), (1.00, True), (1.05, True)])
def test_a_max_case_is_judged_as_its_ratio_to_the_pytorch_partner(tmp_path, torch_slowdown, flagged):
    """MAX 30% slower on the last night: a regression only if its ratio to PyTorch moved too (the torch case
    itself, with no probe in these runs, is judged on raw seconds and flags its own 30%)."""
    folder = tmp_path / "results" / CPU_FOLDER
    for night, drift in enumerate(QUIET):
        write_run(folder, night, {CASE: 0.35 * drift, TORCH_CASE: 0.32 * drift}, extras=PAIR)
    write_run(folder, len(QUIET), {CASE: 0.35 * 1.3, TORCH_CASE: 0.32 * torch_slowdown}, extras=PAIR)
    rows = {row.latest.name: row for row in dashboard.build_report(tmp_path / "results").rows}
    assert rows[CASE].regressed is flagged and rows[CASE].normalisation == "PyTorch partner (same run)"
    # the group's block-timed threshold (10%, calibrated on real runs): 30% is called, 5% is not
    threshold = regression.threshold_pct("encoder-latency", "time", interleaved=False) / 100
    assert rows[TORCH_CASE].regressed is (torch_slowdown > 1 + threshold)
