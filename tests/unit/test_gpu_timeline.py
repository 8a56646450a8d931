"""scripts/gpu_timeline.py reads an Nsight Systems trace (`nsys stats --report cuda_gpu_trace --format csv`)
and prints one replayed step's rows with the idle time before each: checked here on a trace written to
its column layout, since the tool exists only on a GPU box."""
import importlib.util

import pytest

from conftest import ROOT

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def timeline():
    spec = importlib.util.spec_from_file_location("gpu_timeline", ROOT / "scripts" / "gpu_timeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def trace(path, steps: list[list[tuple[int, int, str]]], step_every_ns: int = 400_000):
    """A cuda_gpu_trace csv: each step's (offset ns, duration ns, name) rows, steps step_every_ns apart."""
    lines = ["Processing [x.sqlite] with [cuda_gpu_trace.py]...", "",
             '"Start (ns)","Duration (ns)","CorrId","GrdX","Strm","Name"']
    for k, step in enumerate(steps):
        for offset, duration, name in step:
            lines.append(f'"{1_000_000 + k * step_every_ns + offset}","{duration}","{k}","1","7","{name}"')
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_a_step_splits_from_the_next_at_the_hosts_turn_and_its_idle_time_adds_up(timeline, tmp_path, capsys):
    step = [(0, 3_000, "memcpy HtoD"), (5_000, 4_000, "_kernel_qkv"), (10_000, 2_000, "_kernel_attend"),
            (12_500, 30_000, "[CUDA memcpy Device-to-Host]")]
    slow = [(o, d * 2, n) for o, d, n in step]  # the same rows, each twice as long: a longer span
    path = trace(tmp_path / "t.csv", [step, slow, step, [(0, 1_000, "memcpy HtoD")]])
    found = timeline.steps(timeline.read_rows(path))
    assert [len(s) for s in found] == [4, 4, 4, 1]
    timeline.main(path)
    out = capsys.readouterr().out
    assert "among 3 (4 rows)" in out  # the lone copy is no whole step
    # the median span is the plain step's 42.5 us: idle 2.0 us before the qkv kernel, 1.0 and 0.5 us after
    assert "span 42.5 us: busy 39.0 us, idle between rows 3.5 us" in out
    assert out.count("_kernel_") == 2
