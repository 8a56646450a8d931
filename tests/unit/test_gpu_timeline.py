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


def test_the_replays_are_the_bursts_of_the_common_kernel_count_and_their_idle_time_adds_up(timeline, tmp_path,
                                                                                           capsys):
    copies = [(0, 3_000, "[CUDA memcpy Host-to-Device]")]
    replay = [(5_000, 4_000, "_kernel_qkv"), (10_000, 2_000, "_kernel_attend"),
              (12_500, 30_000, "[CUDA memcpy Device-to-Host]")]
    slow = [(o, d * 2, n) for o, d, n in replay]  # the same rows, each twice as long: a longer span
    prefill = [(0, 1_000, "_kernel_embed")] + [(2_000 * k, 1_000, f"_kernel_{k}") for k in range(1, 5)]
    path = trace(tmp_path / "t.csv", [prefill, copies + replay, replay, slow, copies + replay, copies])
    bursts = timeline.steps(timeline.read_rows(path))
    assert [len(b) for b in bursts] == [5, 4, 3, 3, 4, 1]
    assert [len(b) for b in timeline.replayed(bursts)] == [4, 3, 3, 4]  # 2 kernels: not the prefill, not a copy
    timeline.main(path)
    out = capsys.readouterr().out
    assert "among 4 (4 rows, 2 kernels)" in out  # the median's burst, copies included
    # the median kernel span is the plain replay's 7.0 us: qkv 4.0 us, idle 1.0 us, attend 2.0 us
    assert "kernels: span 7.0 us, busy 6.0 us, idle between them 1.0 us" in out
    assert out.count("_kernel_") == 2
