"""The custom Mojo kernel gemv_nt (out = x @ w.T, w packed in panels) against numpy, over shapes that
exercise its tiles.

One graph with every dimension symbolic (conftest's `kernel_probe`, shared with the attention kernel's test); Hypothesis draws M (x's rows go in tiles of 1 to 6,
so 1..14 covers every tile and remainder), N (4-row panels, a last partial panel, cache blocks) and K
(8-value steps and the scalar remainder), with dense values from a drawn seed at a drawn scale.
The same graph also runs the float16-weight instantiation on the same (half-representable) weights: it
must give the float32 product bit for bit, since it only widens each weight as it loads it. And it runs
both micro kernels, whichever this CPU picks by default: two panel rows per 16-float vector (AVX-512) and
one row per 8-float vector; they sum the same products in the same order, so they too agree bit for bit.
"""
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import kernel_probe_run

pytestmark = pytest.mark.unit


@settings(max_examples=30)
@given(m=st.integers(1, 14), n=st.integers(1, 700), k=st.integers(1, 400), seed=st.integers(0, 2**32 - 1),
       scale=st.sampled_from([1e-3, 1.0, 30.0]))
def test_gemv_nt_equals_numpy(kernel_probe, m, n, k, seed, scale):
    from maxwhisper.gemv import panels
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((m, k)) * scale).astype(np.float32)
    w_half = rng.standard_normal((n, k)).astype(np.float16)
    w = w_half.astype(np.float32)
    inputs = (x, panels(w), panels(w_half), np.zeros(n, np.float32))
    got, got_half, got_rows, got_pairs = kernel_probe_run(kernel_probe, gemv=list(inputs))
    want = x.astype(np.float64) @ w.astype(np.float64).T
    assert got.shape == (m, n) and got.dtype == np.float32
    # float32 sums of k products: each output within a few ulps of sum |x||w| (measured worst 9.1e-8 of it
    # over M up to 448, K up to 385); 1e-6 leaves room and still fails any wrong row, column or k offset.
    bound = 1e-6 * (np.abs(x).astype(np.float64) @ np.abs(w).astype(np.float64).T) + 1e-30
    assert (np.abs(got - want) <= bound).all(), f"max excess {np.max(np.abs(got - want) / bound):.3g}"
    assert np.array_equal(got_half, got), f"float16 weights differ by up to {np.abs(got_half - got).max():.3g}"
    for name, other in (("one row per vector", got_rows), ("two rows per vector", got_pairs)):
        assert np.array_equal(other, got), f"{name} differs by up to {np.abs(other - got).max():.3g}"


def test_kernels_load_from_a_folder_named_by_their_content(tmp_path, monkeypatch):
    """MAX caches a compiled kernel package by its folder: every checkout of the same sources must map to one
    folder (a fresh clone's warm `make test` otherwise recompiled them, ~50 s), and changed sources to another."""
    from maxwhisper.gemv import SOURCES, stable_kernels_path
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    clones = [shutil.copytree(SOURCES, tmp_path / f"clone{i}" / "kernels") for i in range(2)]
    first, second = (stable_kernels_path(c) for c in clones)
    assert first == second and first.name == "kernels" and first.parent.parent == tmp_path / "cache" / "maxwhisper"
    assert sorted(p.name for p in first.iterdir()) == sorted(p.name for p in SOURCES.iterdir() if p.suffix == ".mojo")
    (clones[1] / "gemv_nt.mojo").write_text((clones[1] / "gemv_nt.mojo").read_text() + "\n# changed\n")
    assert stable_kernels_path(clones[1]) != first
    monkeypatch.setenv("XDG_CACHE_HOME", "/proc/no-such-cache")  # unwritable: the sources themselves
    assert stable_kernels_path(clones[0]) == clones[0]


def test_graphs_take_the_kernels_precompiled_beside_their_content_named_folder(tmp_path):
    """A graph given the sources re-parses them at every build (the step graph: 2.8-4.1 s a build); the
    package precompiled once beside the content-named copy builds in 1.3 s, then 0.01 s. Sources that do not
    compile leave no package behind, and the folder itself is used (MAX then reports the error)."""
    from maxwhisper.gemv import KERNELS_PATH, SOURCES, precompiled, stable_kernels_path
    assert KERNELS_PATH.suffix == ".mojoc" and KERNELS_PATH.parent == stable_kernels_path().parent
    assert precompiled(SOURCES) == SOURCES  # the repository itself is never written into
    broken = tmp_path / "kernels-broken" / "kernels"
    broken.mkdir(parents=True)
    (broken / "__init__.mojo").write_text("this is not mojo\n")
    assert precompiled(broken) == broken and list(broken.parent.iterdir()) == [broken]
