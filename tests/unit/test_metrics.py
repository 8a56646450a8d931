"""The numbers that judge the encoder: word error rate and tensor comparison, on cases with known answers."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from maxwhisper.metrics import compare, word_error_rate

pytestmark = pytest.mark.unit
words = st.lists(st.sampled_from(["alpha", "bravo", "charlie", "delta", "echo"]), min_size=1, max_size=12)


@pytest.mark.parametrize("ref, hyp, wer", [
    ("the quick brown fox", "the quick brown fox", 0.0),
    ("the quick brown fox", "the quick round fox", 0.25),   # one substitution
    ("the quick brown fox", "the quick fox", 0.25),         # one deletion
    ("the quick brown fox", "the very quick brown fox", 0.25),  # one insertion
    ("the quick brown fox", "", 1.0),
    ("Hello, World!", "hello world", 0.0),                  # case and punctuation are normalized away
])
def test_word_error_rate_known_cases(ref, hyp, wer):
    assert word_error_rate(ref, hyp) == pytest.approx(wer)


@given(ref=words, hyp=words)
def test_word_error_rate_is_bounded_by_the_edit_counts(ref, hyp):
    r, h = " ".join(ref), " ".join(hyp)
    assert word_error_rate(r, r) == 0
    wer = word_error_rate(r, h)
    # Edit distance lies between the length difference and the longer length.
    assert abs(len(ref) - len(hyp)) / len(ref) <= wer + 1e-12 and wer <= max(len(ref), len(hyp)) / len(ref) + 1e-12


@given(seed=st.integers(0, 2**32 - 1), scale=st.floats(1e-3, 1e3))
def test_compare_finds_the_worst_element(seed, scale):
    rng = np.random.default_rng(seed)
    e = rng.normal(0, scale, (5, 7))
    a = e.copy()
    where = tuple(int(i) for i in rng.integers(0, (5, 7)))
    a[where] += scale
    d = compare(a, e)
    assert d.worst == where and d.max_abs == pytest.approx(scale)
    assert d.nmse == pytest.approx(scale**2 / np.sum(e * e))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_one_position_far_off_fails_although_the_whole_looks_fine(dtype):
    """1500 positions x 384 channels; one position replaced by 13% of itself (87% off): NMSE 6e-4 of one
    row in 1500 and max|diff| within the old bf16 limit, yet the stage must fail."""
    from maxwhisper.metrics import compare_taps
    e = np.random.default_rng(0).normal(0, 1, (1500, 384))
    a = e.copy()
    a[700] *= 0.13
    ok_before = compare_taps({"ln_post": e + 1e-9}, {"ln_post": e}, dtype)[0].ok
    result = compare_taps({"ln_post": a}, {"ln_post": e}, dtype)[0]
    assert ok_before and not result.ok and result.diff.worst_row == (700,), str(result)


def test_a_quiet_position_off_fails_on_the_position_rule_alone():
    """A position with a hundredth of the others' scale, off by 1% of itself: max|diff| and NMSE stay far inside
    their float32 limits (1e-4 against 2e-3, 7e-12 against 6e-11), so only the per-position rule can fail it."""
    from maxwhisper.metrics import TOLERANCES, compare_taps
    e = np.random.default_rng(3).normal(0, 1, (1500, 384))
    e[700] *= 0.01
    a = e.copy()
    a[700] += 1e-4 * np.sign(e[700])
    result = compare_taps({"ln_post": a}, {"ln_post": e}, "float32")[0]
    t = TOLERANCES["float32"]["ln_post"]
    assert result.diff.max_abs <= t.scaled * result.scale and result.diff.nmse <= t.nmse
    assert not result.ok and result.diff.worst_row == (700,), str(result)


def test_bfloat16_allows_a_few_outlier_positions_only():
    from maxwhisper.metrics import compare_taps
    e = np.random.default_rng(1).normal(0, 1, (1500, 384))
    a = e * (1 + 0.005 * np.random.default_rng(2).normal(size=e.shape))  # bf16-like 0.5% noise everywhere
    for n_off in (4, 5):
        b = a.copy()
        b[:n_off] *= 1.2  # 20% off: over `typical`, within `row`
        assert compare_taps({"x": b}, {"x": e}, "bfloat16")[0].ok == (n_off <= 4)
