"""Which GPU tests run where, with the detection faked: MAX-only GPU tests run whenever MAX sees a GPU,
PyTorch-on-CUDA ones need a CUDA torch, and a GPU run that would skip everything fails, saying what to install."""
import pytest

import conftest
from conftest import INSTALL_MAX, INSTALL_TORCH, GpuStatus, gpu_run_problem, gpu_skip_reason

pytestmark = pytest.mark.unit
CPU_BOX = GpuStatus(visible=False, max_gpu=False, torch_cuda=False)
GPU_BOX_CPU_TORCH = GpuStatus(visible=True, max_gpu=True, torch_cuda=False)  # what `make` installs on a GPU box
GPU_BOX_NOTHING = GpuStatus(visible=True, max_gpu=False, torch_cuda=False)
GPU_BOX_FULL = GpuStatus(visible=True, max_gpu=True, torch_cuda=True)


@pytest.mark.parametrize("status, markers, runs", [
    (CPU_BOX, {"gpu"}, False),
    (CPU_BOX, {"gpu", "torch_cuda"}, False),
    (CPU_BOX, {"unit"}, True),
    (GPU_BOX_CPU_TORCH, {"gpu"}, True),  # MAX-only GPU tests run although torch is a CPU build
    (GPU_BOX_CPU_TORCH, {"gpu", "torch_cuda"}, False),
    (GPU_BOX_NOTHING, {"gpu"}, False),
    (GPU_BOX_FULL, {"gpu"}, True),
    (GPU_BOX_FULL, {"gpu", "torch_cuda"}, True),
    (GpuStatus(visible=True, max_gpu=False, torch_cuda=True), {"gpu", "torch_cuda"}, True),
])
def test_skip_reason(status, markers, runs):
    reason = gpu_skip_reason(markers, status)
    assert (reason is None) == runs, reason
    if not runs:
        assert (INSTALL_TORCH if "torch_cuda" in markers else INSTALL_MAX) in reason


def test_a_gpu_run_that_would_skip_everything_fails_and_names_what_to_install():
    reasons = [gpu_skip_reason(m, GPU_BOX_NOTHING) for m in ({"gpu"}, {"gpu", "torch_cuda"})]
    problem = gpu_run_problem(GPU_BOX_NOTHING, reasons, "gpu")
    assert problem and INSTALL_MAX in problem and INSTALL_TORCH in problem and "all 2 gpu tests" in problem


@pytest.mark.parametrize("status, markexpr", [
    (CPU_BOX, "gpu"),                 # no GPU here: skipping is the honest outcome
    (GPU_BOX_NOTHING, "not slow"),    # not a GPU run
    (GPU_BOX_NOTHING, "not gpu"),
])
def test_other_runs_may_skip_gpu_tests(status, markexpr):
    reasons = [gpu_skip_reason({"gpu"}, status)]
    assert gpu_run_problem(status, reasons, markexpr) is None


def test_a_gpu_run_where_max_cannot_see_the_gpu_fails_even_if_torch_tests_run():
    """A CUDA torch runs its torch_cuda tests, but MAX's (the product's) would all skip: a broken MAX install on a
    GPU box is an error naming what MAX raised, not a quiet green run of PyTorch's tests alone."""
    broken = GpuStatus(visible=True, max_gpu=False, torch_cuda=True, max_error="RuntimeError: CUDA driver too old")
    reasons = [gpu_skip_reason(m, broken) for m in ({"gpu"}, {"gpu"}, {"gpu", "torch_cuda"})]
    problem = gpu_run_problem(broken, reasons, "gpu")
    assert problem and "its 2 gpu tests would skip" in problem and INSTALL_MAX in problem
    assert "MAX raised RuntimeError: CUDA driver too old" in problem and "CUDA driver too old" in reasons[0]


def test_a_gpu_run_with_one_runnable_test_passes_the_gate():
    reasons = [gpu_skip_reason(m, GPU_BOX_CPU_TORCH) for m in ({"gpu"}, {"gpu", "torch_cuda"})]
    assert gpu_run_problem(GPU_BOX_CPU_TORCH, reasons, "gpu") is None


class FakeItem:
    def __init__(self, *markers):
        self.markers, self.added = [pytest.Mark(m, (), {}) for m in markers], []

    def iter_markers(self):
        return iter(self.markers)

    def add_marker(self, mark):
        self.added.append(mark)


class FakeConfig:
    def __init__(self, markexpr):
        self.markexpr = markexpr

    def getoption(self, name):
        assert name == "markexpr"
        return self.markexpr


def test_collection_hook_skips_and_fails_as_the_rules_say(monkeypatch):
    monkeypatch.setattr(conftest, "gpu_status", lambda: GPU_BOX_CPU_TORCH)
    items = [FakeItem("gpu"), FakeItem("gpu", "torch_cuda"), FakeItem("unit")]
    conftest.pytest_collection_modifyitems(FakeConfig("gpu"), items)
    assert [len(i.added) for i in items] == [0, 1, 0]
    monkeypatch.setattr(conftest, "gpu_status", lambda: GPU_BOX_NOTHING)
    with pytest.raises(pytest.UsageError, match="would skip"):
        conftest.pytest_collection_modifyitems(FakeConfig("gpu"), [FakeItem("gpu"), FakeItem("gpu", "torch_cuda")])


@pytest.mark.parametrize("markexpr, runs_slow", [
    ("", False), ("parity", False), ("gpu", False), ("unit and not slow", False), ("not slow", False),
    ("slow", True), ("parity and slow", True), ("slow or not slow", True),
])
def test_slow_cases_run_only_when_the_marker_expression_names_them(markexpr, runs_slow):
    assert conftest.wants_slow(markexpr) == runs_slow


def test_a_marker_run_collects_no_slow_case():
    """`pytest -m parity` (as the README has it) leaves out the slow cases that plain `pytest` leaves out."""
    import subprocess
    import sys
    from conftest import ROOT
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "parity", "-p", "no:cacheprovider",
                          "tests/parity/test_decoder_sizes.py"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    collected = [line for line in out.stdout.splitlines() if "::" in line]
    assert collected and not any("large-v3" in line or "graph-ops" in line for line in collected), out.stdout
