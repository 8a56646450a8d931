"""The decoder-step table printed at the end of a benchmark run (tests/bench/conftest.py)."""
from types import SimpleNamespace

import pytest

from tests.bench.conftest import decoder_summary

pytestmark = pytest.mark.unit


def step(impl, device, median_s, gbps, probe):
    return SimpleNamespace(group="decoder-step", stats=SimpleNamespace(median=median_s), extra_info=dict(
        impl=impl, device=device, batch=1, cache=100, achieved_gbps=gbps, read_probe_gbps=probe,
        floor_ms=1.0, roofline_fraction=gbps / probe if probe > 0 else float("nan")))


def test_each_case_is_read_against_its_probe_and_the_runs_fastest():
    """'of floor' uses the probe after each case, 'of best' the run's fastest probe on that device; a device
    without a probe (NaN: a GPU box whose torch has no CUDA) prints NaN rather than failing the run."""
    benches = [step("torch", "cpu", 0.010, 8.0, 80.0), step("max", "cpu", 0.002, 40.0, 40.0),
               step("torch", "gpu", 0.001, 1.0, float("nan")), step("max", "gpu", 0.0005, 2.0, float("nan"))]
    lines = []
    tr = SimpleNamespace(section=lambda *a, **k: None, write_line=lines.append)
    decoder_summary(tr, SimpleNamespace(_benchmarksession=SimpleNamespace(benchmarks=benches)))
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["cpu"][-2:] == ["1.00", "0.50"]  # its own probe 40 GB/s, the run's best 80
    assert rows["gpu"][-1] == "nan"


def test_runs_from_two_generations_of_one_cpu_name_are_stored_apart(monkeypatch):
    """The CI machine's AVX2 EPYC and its Zen 5 both call themselves "AMD EPYC": the storage folder (and so the
    nightly's series) tells them apart by family and model, so their runs never form one history."""
    from tests.bench.conftest import cpu_generation
    block = "processor\t: {i}\nvendor_id\t: AuthenticAMD\ncpu family\t: {family}\nmodel\t\t: {model}\nmodel name\t: AMD EPYC\n"
    avx2, zen5 = ("".join(block.format(i=i, family=f, model=m) + "\n" for i in range(2)) for f, m in ((25, 1), (26, 2)))
    assert cpu_generation(avx2) == "f25m1" and cpu_generation(zen5) == "f26m2"
    import tests.bench.conftest as bench
    ids = []
    for text in (avx2, zen5):
        monkeypatch.setattr(bench, "cpu_generation", lambda text=text: cpu_generation(text))
        ids.append(bench.machine_id())
    assert ids[0] != ids[1] and "f25m1" in ids[0] and "f26m2" in ids[1], ids
