"""The regression rule (maxwhisper.regression) and the figures it judges (maxwhisper.results)."""
from __future__ import annotations

import datetime as dt
import os
import pathlib
import types

import numpy as np
import pytest

from maxwhisper import regression
from maxwhisper.paired import GpuNeighbours
from maxwhisper.results import Machine, Result, Run, figures, time_figure
from tests.helpers import FakeNvml

pytestmark = pytest.mark.unit


def noisy(n: int, sd: float = 0.005, seed: int = 0) -> list[float]:
    """n clean figures around 1.0, Gaussian: the rule's mechanics. Its rates on real noise are measured by
    the calibration (tests/unit/test_nightly_real_runs.py, docs/benchmarks.md)."""
    return list(1.0 + sd * np.random.default_rng(seed).standard_normal(n))


# The step's estimate over 200 seeds of `noisy` (0.5% spread): 0.0935 to 0.1105, so within 0.03 of 10% is a
# step read as a step, not as the noise around it.
STEP_ESTIMATE_ABS = 0.03


@pytest.mark.parametrize("seed", range(5))
def test_a_persistent_10pct_step_is_called_on_its_first_run(seed):
    call = regression.judge(noisy(8, seed=seed) + [1.10])
    assert call.regressed and call.since == 8 and call.change == pytest.approx(0.10, abs=STEP_ESTIMATE_ABS)


def test_clean_noise_is_not_called():
    """100 histories of 12 nights at 0.5% spread (a sixth of the 3% threshold): no night called."""
    for seed in range(100):
        values = noisy(12, seed=seed)
        assert not any(regression.judge(values[:t]).regressed for t in range(1, 13)), seed


def test_one_noisy_night_that_recovers_is_not_called_the_night_after():
    values = noisy(8) + [1.15, 1.0]
    assert regression.judge(values[:-1]).regressed  # on the night itself nothing can tell it from a step
    assert not regression.judge(values).regressed


def test_slow_drift_adds_up_and_is_called():
    values = noisy(8, sd=0.003) + [1.02, 1.04, 1.06, 1.08]
    assert any(regression.judge(values[:t]).regressed for t in range(9, 13))


def test_a_step_older_than_recent_runs_is_reported_as_persisting_not_new():
    values = noisy(8) + [1.2] * (regression.RECENT + 1)
    call = regression.judge(values)
    assert not call.regressed and call.since == 8 and "no longer new" in call.rule


def test_a_new_step_on_top_of_a_persisting_one_is_called_as_new():
    values = noisy(8) + [1.10] * (regression.RECENT + 3) + [1.21]
    call = regression.judge(values)
    assert call.regressed and call.since == len(values) - 1 and call.change == pytest.approx(0.10, abs=STEP_ESTIMATE_ABS)
    assert not regression.judge(values[:-1]).regressed  # the old step alone is no longer new


def test_a_step_is_new_for_exactly_recent_runs():
    """The boundary of RECENT: the step's RECENT-th slow run is still its call, the next is not."""
    values = noisy(8) + [1.2] * regression.RECENT
    assert regression.judge(values).regressed and regression.judge(values).since == 8
    assert not regression.judge(values + [1.2]).regressed


@pytest.mark.parametrize("dip, called", [(regression.SETTLED, True), (regression.SETTLED - 1, False)])
def test_a_dip_is_a_baseline_once_it_lasted_settled_runs(dip, called):
    """A lower level of SETTLED runs is the best earlier level, so the return to the old one is a step up from it;
    one run shorter it is a dip, and the return is no step (on real runs a two-night dip was one)."""
    values = noisy(8) + [0.85 * v for v in noisy(dip, seed=1)] + [1.0]
    assert regression.judge(values).regressed == called


def test_a_step_that_recovered_is_not_the_one_reported():
    """Up, back down, then up again and a little more: the slowdown dates from the second rise (run 17), not from
    the first (run 9), which recovered; the return itself is called as new."""
    values = noisy(8) + [1.10] * 4 + noisy(4, seed=2) + [v + 0.06 for v in noisy(4, seed=3)]
    assert regression.judge(values).regressed is False and regression.judge(values).since == 16  # 4 runs: not new
    assert regression.judge(values[:17]).regressed and regression.judge(values[:17]).since == 16
    call = regression.judge(values + [v + 0.08 for v in noisy(2, seed=4)])  # within 3% of the level before
    assert not call.regressed and call.since == 16, call


def test_a_short_history_is_not_judged():
    call = regression.judge([1.0, 1.0, 2.0])
    assert not call.regressed and call.rule.startswith("history too short")


def test_threshold_is_respected():
    values = noisy(8, sd=0.002) + [1.06]
    assert regression.judge(values, 3.0).regressed and not regression.judge(values, 10.0).regressed


# --- figures ------------------------------------------------------------------------------------

def result(name: str, median: float, **extra) -> Result:
    return Result(key=name, name=name, group=extra.pop("group", "g"), median=median, low=median, high=median,
                  spread=None, data=None, extra=extra)


def run_of(*results: Result) -> Run:
    machine = Machine("f", "n", "cpu", "", "CPython 3.11", "full")
    return Run(pathlib.Path("x.json"), machine, {}, "c0ffee", dt.datetime(2026, 1, 1), {r.key: r for r in results})


def test_interleaved_rounds_are_judged_as_per_round_ratios():
    """Wall time: the median per-round ratio. CPU time: the geometric mean of the per-round ratios with 10% of
    each tail cut, so that one disturbed round of ten moves it no more than the median."""
    rounds = {"case": [1.0, 2.0, 3.0], "partner": [0.5, 1.0, 1.0], "probe": [1.0, 1.0, 1.0]}
    cpu = {"case": [1.0] * 5 + [4.0] * 4 + [50.0], "partner": [1.0] * 10}  # median 2.5; cut mean exp(ln 4 / 2)
    r = result("paired", 2.0, rounds_s=rounds, rounds_cpu_s=cpu, peak_rss_mb=700.0)
    figs = figures(run_of(r), r)
    assert figs["time"].value == 2.0 and figs["time"].normalisation == "partner (interleaved)"
    assert figs["cpu time"].value == pytest.approx(2.0) and "CPU time" in figs["cpu time"].normalisation
    assert figs["peak host memory"].value == 700.0
    probe_only = result("compile", 2.0, rounds_s={"case": [2.0, 4.0, 3.0], "probe": [1.0, 1.0, 2.0]})
    assert time_figure(run_of(probe_only), probe_only).value == pytest.approx(2.0)
    assert time_figure(run_of(probe_only), probe_only).normalisation == "probe (interleaved)"


def test_without_rounds_a_max_case_uses_its_partner_then_the_gemm_probe_then_raw():
    latency = dict(group="encoder-latency", device="cpu", dtype="float32", batch=1, model="tiny.en")
    mx, pt = result("max", 0.3, impl="max", **latency), result("torch", 0.2, impl="torch", **latency)
    probe = result("test_gemm_ceiling[float32]", 0.05, group="gemm-ceiling")
    compile_case = result("test_compile_time[warm]", 2.0, group="compile")
    run = run_of(mx, pt, probe, compile_case)
    assert (time_figure(run, mx).value, time_figure(run, mx).normalisation) == (pytest.approx(1.5),
                                                                                "PyTorch partner (same run)")
    assert time_figure(run, compile_case).value == pytest.approx(40.0)
    assert time_figure(run_of(compile_case), compile_case).normalisation == "none (raw seconds)"


def test_rounds_interleave_partner_peers_probe_and_case_and_keep_the_timed_rounds_aligned():
    from types import SimpleNamespace
    from maxwhisper.paired import Rounds
    calls: list[str] = []
    rounds = Rounds(lambda: calls.append("partner"), lambda: calls.append("probe"),
                    {"peer": lambda: calls.append("peer")})
    case = rounds.case(lambda: calls.append("case"))
    for _ in range(3):  # one warm-up round, two timed
        rounds.setup()
        case()
    assert calls == ["partner", "peer", "probe", "case"] * 3
    timed = SimpleNamespace(stats=SimpleNamespace(stats=SimpleNamespace(data=[0.1, 0.2])))
    info = rounds.extra_info(timed, "partner", "full", "cpu")
    assert info["rounds_s"]["case"] == [0.1, 0.2] and len(info["rounds_s"]["partner"]) == 2
    assert len(info["peers_s"]["peer"]) == len(info["rounds_cpu_s"]["probe"]) == 2


@pytest.mark.parametrize("group, metric, interleaved, expected", [
    ("encoder-paired", "time", True, 7.5),                                       # the AVX2 EPYC's 30-round set
    ("encoder-paired", "cpu time", True, regression.DEFAULT_THRESHOLD_PCT),    # quiet at 3% on both 30-round sets
    ("encoder-paired", "peak host memory", True, regression.MEMORY_THRESHOLD_PCT),
    ("compile-paired", "time", True, 20.0),                                      # its own, from the loaded set
    ("decoder-paired", "cpu time", True, 5.0),                                   # its two sets
    ("transcribe-every-path", "cpu time", True, regression.DEFAULT_THRESHOLD_PCT),  # quiet at 3% on its set
    ("decoder-step", "time", False, 30.0),                                       # the standard suite's real runs
    ("encoder-latency", "peak host memory", False, 7.5),
    ("decoder-prefill", "time", False, 15.0),                                    # the block-timed set
    ("decoder-prefill", "peak host memory", False, regression.BLOCK_MEMORY_PCT),  # block-timed, not recorded
    ("gpu-only-group", "time", False, regression.BLOCK_THRESHOLD_PCT),           # block-timed, no set
])
def test_each_figure_takes_its_calibrated_threshold_or_its_kinds(group, metric, interleaved, expected):
    assert regression.threshold_pct(group, metric, interleaved=interleaved) == expected


@pytest.mark.parametrize("device, replayed, expected", [("gpu", True, 20.0), ("gpu", False, None), ("cpu", True, 30.0),
                                                        ("cpu", False, 30.0)])
def test_a_gpu_step_takes_the_gpu_set_s_threshold_and_a_launched_one_is_not_judged(device, replayed, expected):
    """fixtures/bench_runs_h200_step8: replayed steps quiet at 20%; launched ones quiet at none of the grid."""
    assert regression.threshold_pct("decoder-step", "time", interleaved=False, device=device,
                                    replayed=replayed) == expected
    assert regression.threshold_pct("decoder-step", "peak host memory", interleaved=False, device=device,
                                    replayed=replayed) == 3.0
    assert regression.threshold_pct("decoder-step", "time", {"decoder-step": 30.0}, False, device, replayed) == 30.0


def test_explicit_thresholds_override_the_calibrated_ones():
    overrides = {"decoder-step": 5.0, "memory": 1.0}
    assert regression.threshold_pct("decoder-step", "time", overrides, interleaved=False) == 5.0
    assert regression.threshold_pct("encoder-latency", "peak host memory", overrides, interleaved=False) == 1.0


@pytest.mark.parametrize("who, busy", [("other", True), ("child", False), ("self", False)])
def test_neighbours_counts_other_processes_cpu_time_and_not_this_ones(who, busy):
    """Another process spinning for 0.6 s uses one CPU of os.cpu_count(); this process, or a child it waits for
    (a case timing a fresh process), is no neighbour."""
    import os
    import subprocess
    import sys
    import time
    from maxwhisper.paired import Neighbours, busy_cpu_s
    if busy_cpu_s() is None:
        pytest.skip("no /proc/stat here: Neighbours measures nothing and the nightly judges every run")
    quiet = Neighbours()
    time.sleep(0.3)
    background = quiet.measure()[0]  # what the machine's other processes use anyway, read against, not assumed zero
    if busy and background > 1 - 0.6 / os.cpu_count():  # seen beside another test run: background 0.95 of 2 cores
        pytest.skip(f"other processes already use {background:.2f} of the CPUs: no room left to see one more")
    neighbours = Neighbours()
    spin = [sys.executable, "-c", "import time\nend = time.process_time() + 0.6\nwhile time.process_time() < end: pass"]
    if who == "other":  # a process this one has not reaped: its CPU time is not yet this process's children's
        other = subprocess.Popen(spin)
        os.waitid(os.P_PID, other.pid, os.WEXITED | os.WNOWAIT)
    elif who == "child":
        subprocess.run(spin, check=True)
    else:
        end = time.process_time() + 0.6
        while time.process_time() < end:
            pass
    share = neighbours.measure()[0]
    if who == "other":
        other.wait()
    # the spinner's 0.6 s over a bit more wall time (its start): about 0.9 of one CPU's share above the background
    assert (share - background > 0.5 / os.cpu_count()) is busy and share <= 1.0


@pytest.mark.parametrize("share, seconds, busy", [
    (0.2, 6.0, True),     # a neighbour through a 15 s case (fixtures/bench_runs_zen5_decoder_neighbours: 19-28%)
    (0.08, 0.03, False),  # three 10 ms ticks of kernel work over a 0.2 s case: measured on a quiet machine
    (0.004, 0.12, False),  # the busiest quiet decoder-paired run
    (0.2, None, True),    # runs that recorded only the share
    (None, None, False),  # runs from before it was recorded
])
def test_a_run_is_busy_when_other_processes_took_both_a_share_and_real_seconds(share, seconds, busy):
    assert regression.busy(share, seconds) is busy


class FakeUtilization(FakeNvml):
    """tests.helpers.FakeNvml whose GPU at index 0 has the per-process utilization samples `samples` (pid,
    microseconds, SM %), or whose query raises NVML error `error`."""
    NVML_ERROR_NOT_FOUND, NVML_SUCCESS, NVML_ERROR_NOT_SUPPORTED = 6, 0, 3

    class NVMLError(Exception):
        def __init__(self, value):
            self.value = value

    def __init__(self, samples=(), error=None):
        self.samples, self.error = samples, error

    def nvmlDeviceGetProcessUtilization(self, handle, since):
        if self.error is not None:
            raise self.NVMLError(self.error)
        return [types.SimpleNamespace(pid=pid, timeStamp=stamp, smUtil=sm) for pid, stamp, sm in self.samples]


@pytest.mark.parametrize("samples, error, expected", [
    ([("own", 1, 60), ("other", 1, 35), ("other", 1, 12)], None, 35.0),  # another process's kernels: its highest
    ([("own", 1, 90)], None, 0.0),                        # this process's own kernels are no neighbour
    ([("own", 1, 90), ("other", -1, 80)], None, 0.0),     # a sample from before the case
    ([], 6, 0.0),                                         # NVML_ERROR_NOT_FOUND: no process ran kernels since
    ([], 0, 0.0),                                         # NVML_SUCCESS with no sample (pynvml raises it too)
    ([], 3, None),                                        # NOT_SUPPORTED (a virtual GPU): unknown, not quiet
    ([("other", 1, 60)], None, None),                     # none is this process's: a container's host ids
])
def test_gpu_neighbours_are_other_processes_sm_use_since_the_case_began(monkeypatch, samples, error, expected):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    fake = FakeUtilization(error=error)
    neighbours = GpuNeighbours(fake)
    pids = {"own": os.getpid(), "other": os.getpid() + 1}
    fake.samples = [(pids[who], neighbours.since + offset, sm) for who, offset, sm in samples]
    assert neighbours.measure() == expected
    assert regression.busy(None, None, expected) == bool(expected)


def test_no_gpu_has_no_gpu_neighbours(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert GpuNeighbours(FakeUtilization([(1, 1, 50)])).measure() is None
