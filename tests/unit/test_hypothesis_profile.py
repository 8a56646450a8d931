"""The suite's Hypothesis settings as CI gets them: exploring (not derandomized), with a seed in the header."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.unit


def test_this_run_has_a_seed_to_replay(pytestconfig):
    """The seed in the header is the one Hypothesis draws from (its plugin reads the option after ours sets it)."""
    import hypothesis.core
    seed = pytestconfig.getoption("hypothesis_seed")
    assert seed is not None and hypothesis.core.global_force_seed == seed


@pytest.mark.parametrize("ci", ["", "1"])
def test_ci_explores_instead_of_replaying_fixed_examples(ci):
    """With CI set, Hypothesis loads its own derandomized profile at import; the suite's profiles must not
    inherit it (they did once: CI then tried the same examples on every run, and printed "seed: None")."""
    env = {**os.environ, "CI": ci}
    env.pop("HYPOTHESIS_PROFILE", None)
    code = "import conftest; from hypothesis import settings; print(settings.default.derandomize)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stdout + out.stderr
