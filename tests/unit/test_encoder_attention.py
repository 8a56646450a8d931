"""The custom Mojo kernel encoder_attention (the encoder's self-attention on CPU) against numpy in float64.

One graph with batch and time symbolic (conftest's `kernel_probe`, shared with gemv_nt's test). Hypothesis draws
the time axis over 1..1504 (items of 8 query rows in register tiles of 4 with AVX2 or 8 with AVX-512, keys in
tiles of 24 or 48, values in blocks of 64, the softmax's vector tails),
the batch (items must not mix), and dense values from a drawn seed at a drawn scale: at the largest the
scores spread over hundreds, so the softmax's shift by the row maximum and its exponent's range are tested.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import ATTENTION_HEADS, ATTENTION_WIDTH, attention_excess, heads_f64, kernel_probe_run

pytestmark = pytest.mark.unit
D, HEADS = ATTENTION_WIDTH, ATTENTION_HEADS  # tiny's width: 6 heads of 64


@settings(max_examples=25)
@given(batch=st.integers(1, 3), time=st.integers(1, 1504), seed=st.integers(0, 2**32 - 1),
       scale=st.sampled_from([0.1, 1.0, 3.0, 12.0, 30.0]))
def test_encoder_attention_equals_numpy(kernel_probe, batch, time, seed, scale):
    qkv = (np.random.default_rng(seed).standard_normal((batch, time, 3 * D)) * scale).astype(np.float32)
    got = kernel_probe_run(kernel_probe, attention=[qkv])[0]
    assert got.shape == (batch, time, D) and got.dtype == np.float32
    excess = attention_excess(got, *heads_f64(qkv))  # within 4e-7 of each head's float32 bound
    assert (excess <= 1).all(), f"max excess {excess.max():.3g} at {np.unravel_index(excess.argmax(), excess.shape)}"


def test_softmax_weights_are_float32_accurate(kernel_probe):
    """Scores that are exact in float32 (0 against every key but one, x against key 1; value 1 at key 1 only) make
    each output row e^x / (T - 1 + e^x) for its own x, so the kernel's exponential is checked to a few ulps over
    its whole range, where the random draws above cannot see an approximation that moves weights by 1e-6."""
    t = 1504
    x = np.linspace(-80, 0, t).astype(np.float32)  # e^-80 / 1503: still a normal float32
    qkv = np.zeros((1, t, 3 * D), np.float32)
    qkv[0, :, 0:D:64] = 8 * x[:, None]  # every head's query: 8x in its first dimension (scaled by 1/8: x, exactly)
    qkv[0, 1, D:2 * D:64] = 1.0  # key 1 of every head: 1 there; every other key 0
    qkv[0, 1, 2 * D::64] = 1.0  # value 1 at key 1 only
    got = kernel_probe_run(kernel_probe, attention=[qkv])[0][0, :, ::64]
    e = np.exp(x.astype(np.float64))
    want = np.repeat((e / (t - 1 + e))[:, None], HEADS, axis=1)
    # measured worst 1.36e-7 (about 2 ulps: the exponential and the sum of 1503 ones each round); 4e-7 leaves room
    rel = np.abs(got - want) / want
    assert rel.max() <= 4e-7, f"worst relative error {rel.max():.3g} at x = {x[rel.max(axis=1).argmax()]}"
