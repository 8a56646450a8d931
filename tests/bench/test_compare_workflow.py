"""The merge gate works: save a baseline, slow the code down, and --benchmark-compare-fail fails.

Runs pytest-benchmark for real, in subprocesses, on a tiny workload whose speed the test controls.
"""
import json

import pytest

pytestmark = pytest.mark.bench
pytest_plugins = ["pytester"]

WORKLOAD = """
import os, time
import pytest

def test_work(benchmark):
    benchmark.group = "encoder-latency"
    benchmark.pedantic(time.sleep, args=(float(os.environ["WORK_S"]),), rounds=15, warmup_rounds=1)
"""


def run(pytester, work_s: float, *args):
    pytester.makepyfile(test_workload=WORKLOAD)
    pytester.makeini("[pytest]\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORK_S", str(work_s))
        return pytester.runpytest_subprocess("--benchmark-storage=file://store", *args)


def test_compare_fails_on_a_real_slowdown_and_passes_without_one(pytester):
    baseline = run(pytester, 0.010, "--benchmark-autosave")
    assert baseline.ret == 0
    saved = list((pytester.path / "store").rglob("0001_*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["benchmarks"][0]["stats"]["median"] > 0.009

    same = run(pytester, 0.010, "--benchmark-compare=0001", "--benchmark-compare-fail=median:10%")
    assert same.ret == 0, same.stdout.str()

    slower = run(pytester, 0.013, "--benchmark-compare=0001", "--benchmark-compare-fail=median:10%")
    assert slower.ret != 0
    output = slower.stdout.str() + slower.stderr.str()
    assert "Performance has regressed" in output and "median" in output, output
