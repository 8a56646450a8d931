"""The sample report in headless Chromium: charts drawn and table rows present in the rendered page.

`python -m tests.unit.test_dashboard_browser` rewrites docs/dashboard.png the same way.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import re
import shutil
import struct
import subprocess
import sys
import tempfile

import pytest

from maxwhisper import dashboard

pytestmark = pytest.mark.unit

ROOT = pathlib.Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "fixtures" / "bench_samples"
BASELINE = next((SAMPLES / "Linux-CPython-3.11-64bit").glob("0001_*.json"))
CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
WINDOW = (1400, 2000)


def chromium(profile: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium with no network chatter and a throwaway profile."""
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def build_sample_report(out: pathlib.Path, results: pathlib.Path = SAMPLES) -> pathlib.Path:
    """The committed sample runs, with their first CPU run pinned as the baseline."""
    args = argparse.Namespace(results=str(results), output=str(out), baseline=str(BASELINE), threshold=[],
                              github_json=None)
    if dashboard.main(args) != 1:
        raise RuntimeError("the sample runs should hold one planted regression; re-run fixtures/make_bench_samples.py")
    return out


def screenshot(page: pathlib.Path, png: pathlib.Path, profile: pathlib.Path) -> None:
    chromium(profile, f"--screenshot={png}", f"--window-size={WINDOW[0]},{WINDOW[1]}", page.as_uri())


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> pathlib.Path:
    if CHROMIUM is None:
        pytest.skip("chromium not found on PATH (Debian: apt-get install chromium, or `make chromium`)")
    return build_sample_report(tmp_path_factory.mktemp("report") / "report.html")


def expected_cases() -> set[str]:
    return {key for path in SAMPLES.rglob("000[1-4]_*.json") for key in dashboard.parse_run(path).results}


def test_rendered_dom_has_the_charts_and_the_table(report, tmp_path):
    dom = chromium(tmp_path / "profile", "--dump-dom", report.as_uri()).stdout
    lines = re.findall(r'<polyline class="line" data-series="([^"]+)"[^>]*points="([^"]+)"', dom)
    drawn = [(series, [tuple(map(float, p.split(","))) for p in points.split()]) for series, points in lines]
    assert sum(series == "median" for series, _ in drawn) == len(expected_cases())  # one latency chart per case
    assert {"peak host RSS", "peak device", "cpu float32 batch 4 tiny.en"} <= {series for series, _ in drawn}
    assert all(len(points) >= 3 for series, points in drawn if series == "median")  # every case has 3+ runs
    assert len(re.findall(r'<polygon class="band" points="[^"]+"', dom)) == len(expected_cases())
    rows = re.findall(r'<tr class="(regressed|ok)" data-case="([^"]+)"', dom)
    assert {case for _, case in rows} == expected_cases() and len(rows) == len(expected_cases())
    assert [case for flag, case in rows if flag == "regressed"] == [
        "tests/bench/test_encoder_bench.py::test_encoder_latency[max-cpu-float32-b4-bundled]"]
    assert rows[0][0] == "regressed" and "0005_corrupt.json" in dom


def test_screenshot_is_a_full_window_png(report, tmp_path):
    png = tmp_path / "shot.png"
    screenshot(report, png, tmp_path / "profile")
    head = png.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", head[16:24]) == WINDOW
    assert png.stat().st_size > 50_000  # a blank page compresses to a few KB; charts and a table do not


if __name__ == "__main__":
    if CHROMIUM is None:
        sys.exit("chromium not found on PATH")
    (ROOT / "docs").mkdir(exist_ok=True)
    os.chdir(ROOT)  # the page names its results folder as given: keep it repository-relative
    with tempfile.TemporaryDirectory() as tmp:
        page = build_sample_report(pathlib.Path(tmp) / "report.html", SAMPLES.relative_to(ROOT))
        screenshot(page, ROOT / "docs" / "dashboard.png",
                   pathlib.Path(tmp) / "profile")
    print(f"wrote {ROOT / 'docs' / 'dashboard.png'}")
