"""The report in headless Chromium, from the synthetic samples and from the committed real runs: charts
drawn, table rows present, and no chart's legend covering its title (measured on the laid-out page).

`python -m tests.unit.test_dashboard_browser` rewrites docs/dashboard.png the same way.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import struct
import subprocess
import sys
import tempfile

import pytest

from conftest import ROOT, SAMPLES
from maxwhisper import dashboard

pytestmark = pytest.mark.unit

BASELINE = next((SAMPLES / "Linux-CPython-3.11-64bit").glob("0001_*.json"))
REAL_RUNS = ROOT / "fixtures" / "bench_runs"  # real runs from this project's CI machine (docs/benchmarks.md)
# Runs in the page after layout: for every chart, the title's and each legend item's box, as the browser drew them.
LAYOUT_PROBE = """<script>
const boxes = [...document.querySelectorAll("svg.chart")].map(svg => {
  const box = el => { const b = el.getBBox(); return [b.x, b.y, b.x + b.width, b.y + b.height]; };
  const view = svg.viewBox.baseVal;
  return {title: box(svg.querySelector(".title")), view: [view.x, view.y, view.width, view.height],
          legend: [...svg.querySelectorAll(".legend")].map(box), label: svg.getAttribute("aria-label")};
});
const out = document.createElement("pre"); out.id = "layout"; out.textContent = JSON.stringify(boxes);
document.body.appendChild(out);
</script>"""
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
def browser() -> str:
    """chromium's path; the test skips, saying how to install it, where there is none."""
    if CHROMIUM is None:
        pytest.skip("chromium not found on PATH (Debian: apt-get install chromium, or `make chromium`)")
    return CHROMIUM


@pytest.fixture(scope="module")
def report(browser, tmp_path_factory) -> pathlib.Path:
    return build_sample_report(tmp_path_factory.mktemp("report") / "report.html")


def overlaps(a: list[float], b: list[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def laid_out_charts(page: pathlib.Path, profile: pathlib.Path) -> list[dict]:
    """Each chart's title and legend boxes as Chromium lays out `page` (a copy with LAYOUT_PROBE added)."""
    probed = page.with_name("probed-" + page.name)
    probed.write_text(page.read_text().replace("</body>", LAYOUT_PROBE + "</body>"))
    dom = chromium(profile, "--dump-dom", probed.as_uri()).stdout
    found = re.search(r'<pre id="layout">(.*?)</pre>', dom, re.S)
    assert found, "the layout probe did not run"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def assert_legends_clear(charts: list[dict]) -> None:
    """No legend item overlaps its chart's title or another item, and every item lies inside the chart."""
    for chart in charts:
        items = chart["legend"]
        width, height = chart["view"][2:]
        assert not any(overlaps(chart["title"], item) for item in items), chart["label"]
        assert not any(overlaps(a, b) for i, a in enumerate(items) for b in items[i + 1:]), chart["label"]
        assert all(item[0] >= 0 and item[2] <= width and item[3] <= height for item in items), chart["label"]


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


def test_no_legend_covers_its_title_on_the_sample_page(report, tmp_path):
    charts = laid_out_charts(report, tmp_path / "profile")
    assert len(charts) >= 10 and any(len(chart["legend"]) >= 2 for chart in charts)
    assert_legends_clear(charts)


def test_page_from_the_committed_real_runs(browser, tmp_path):
    page = tmp_path / "real.html"
    args = argparse.Namespace(results=str(REAL_RUNS), output=str(page), baseline=None, threshold=[], github_json=None)
    assert dashboard.main(args) == 0  # the committed runs are clean (tests/unit/test_nightly_real_runs.py)
    dom = chromium(tmp_path / "profile", "--dump-dom", page.as_uri()).stdout
    cases = {key for path in REAL_RUNS.rglob("*.json") for key in dashboard.parse_run(path).results}
    rows = re.findall(r'<tr class="(ok)" data-case="([^"]+)" data-normalisation="([^"]+)"', dom)
    assert {case for _, case, _ in rows} == cases
    assert {"partner (interleaved)", "probe (interleaved)"} <= {norm for _, _, norm in rows}
    ratio_series = set(re.findall(r'data-series="([^"]+, per round)"', dom))
    assert ratio_series, "the MAX/PyTorch ratio chart has no interleaved series"
    charts = laid_out_charts(page, tmp_path / "profile")
    ratio = next(chart for chart in charts if chart["label"].startswith("MAX / PyTorch"))
    assert len(ratio["legend"]) == len(ratio_series)
    assert_legends_clear(charts)


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
