"""Properties of the compiled encoder over its symbolic batch dimension (one compile, many examples).

Inputs are dense: every value drawn, from a Hypothesis-drawn seed, over a drawn sub-range of the
log-mel range [-1.5, 1.5] (silence sits at the bottom of it, speech spreads over all of it).
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maxwhisper.golden import random_mel

pytestmark = pytest.mark.unit

seeds = st.integers(0, 2**32 - 1)


@st.composite
def mel_batches(draw, batch=st.integers(1, 4)):
    """A (batch, 80, 3000) log-mel batch: a drawn seed fills every value, over a drawn [low, high] range."""
    n, seed = draw(batch), draw(seeds)
    low = draw(st.floats(-1.5, 1.0))
    high = draw(st.floats(low + 0.01, 1.5))
    return np.random.default_rng(seed).uniform(low, high, (n, 80, 3000)).astype(np.float32)


@settings(max_examples=4)
@given(mel=mel_batches(st.integers(2, 3)), data=st.data())
def test_any_batch_gives_the_per_item_result(max_encoder, bundled, mel, data):
    together = max_encoder(mel)
    assert together.shape == (len(mel), bundled.dims.n_audio_ctx, bundled.dims.n_audio_state)
    i = data.draw(st.integers(0, len(mel) - 1), label="item")  # one drawn item alone: an encoder call less per item
    # Same kernels, other batch size: measured identical to ~1e-6; 1e-4 is float32 noise on |out| <= 13.
    np.testing.assert_allclose(together[i], max_encoder(mel[i:i + 1])[0], atol=1e-4, rtol=0)


@settings(max_examples=4)
@given(mel=mel_batches(st.integers(2, 3)), data=st.data(), seed=seeds)
def test_items_do_not_leak_into_each_other(max_encoder, mel, data, seed):
    victim = data.draw(st.integers(0, len(mel) - 1), label="victim")
    before = max_encoder(mel)
    mel[victim] = np.random.default_rng(seed).uniform(-1.5, 1.5, mel.shape[1:])
    after = max_encoder(mel)
    for i in range(len(mel)):
        assert np.array_equal(before[i], after[i]) != (i == victim), f"item {i} changed when item {victim} did"


@settings(max_examples=4)
@given(mel=mel_batches(st.just(1)))
def test_output_is_float32_contiguous_and_deterministic(max_encoder, mel):
    a, b = max_encoder(mel), max_encoder(mel)
    assert a.dtype == np.float32 and a.flags.c_contiguous and np.isfinite(a).all()
    assert np.array_equal(a, b)


@settings(max_examples=4)
@given(mel=mel_batches(st.just(1)))
def test_output_is_a_layer_norm_with_the_models_gain_and_bias(max_encoder, bundled, mel):
    """Undoing ln_post's affine map, z = (y - bias) / gain, leaves every position with mean 0 and variance
    var / (var + eps) over the model's width: the output really went through ln_post with these
    parameters (a missing ln_post, swapped or unbound gain/bias, or another normalisation fails)."""
    out = max_encoder(mel)[0].astype(np.float64)
    d = bundled.dims.n_audio_state
    assert out.shape[-1] == d
    gain, bias = (bundled.state_dict[f"encoder.ln_post.{p}"].double().numpy() for p in ("weight", "bias"))
    z = (out - bias) / gain  # tiny.en's |gain| >= 0.66, so the division does not amplify float32 noise much
    # Measured on random inputs and the speech windows: |mean| <= 9.0e-8 (float32 rounding) and
    # |var - 1| <= 9.2e-6, mostly eps / var itself (1e-5 / var); 10x and 5x those.
    assert np.abs(z.mean(-1)).max() < 1e-6
    assert np.abs(z.var(-1) - 1).max() < 5e-5


def test_the_torch_module_encodes_a_window_once_and_hands_out_copies(max_encoder):
    """MaxAudioEncoder (openai-whisper's encoder seam) returns the last window's features again for an equal
    log-mel, without encoding it again, and each caller gets its own tensor: a caller writing into its features
    cannot change what the next one gets (returning the cached tensor itself failed this, 1 of 1)."""
    import torch

    from maxwhisper.encoder import MaxAudioEncoder
    calls = []
    module = MaxAudioEncoder(max_encoder)
    module.encoder = lambda mel: calls.append(1) or max_encoder(mel)
    mel = torch.from_numpy(random_mel(80, seed=7))
    want = torch.from_numpy(max_encoder(mel.numpy()))
    for _ in range(3):  # encoded, then reused twice
        got = module(mel.clone())
        assert torch.equal(got, want)
        got.zero_()  # a caller that writes into the features it was given
    other = module(mel + 0.25)
    assert len(calls) == 2 and torch.equal(other, torch.from_numpy(max_encoder((mel + 0.25).numpy())))
