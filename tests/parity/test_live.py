"""Live parity: the MAX encoder and openai-whisper's PyTorch encoder on the same input, now.

Speech is compared as one batch of five windows (every clip's first 30 s window and the long clip's
windows from 30 s and 60 s, cut as whisper.transcribe cuts them), so batching and later windows are
covered at every stage, position by position (`maxwhisper.metrics.TOLERANCES`).
"""
import numpy as np
import pytest
import torch

from maxwhisper.reference import torch_taps
from maxwhisper.stages import encoder_tap_names
from tests.helpers import as_taps, assert_parity, item, native_bf16_or_slow

pytestmark = pytest.mark.parity


@pytest.fixture(scope="module")
def speech_taps(speech_windows, max_encoder) -> list[np.ndarray]:
    """The encoder graph's outputs on the speech batch, every tap then the features: run once for this module."""
    return max_encoder.run(speech_windows[1])


def test_every_stage_matches_pytorch_on_a_batch_of_speech(speech_windows, speech_reference, speech_taps):
    names, mels = speech_windows
    assert len(names) == 5 and any(n.endswith("@60s") for n in names)
    got = as_taps(speech_taps)
    for i, name in enumerate(names):
        assert_parity(item(got, i), item(speech_reference, i), label=name)


def test_every_stage_matches_pytorch_on_a_batch_of_noise(max_encoder, torch_model, rng):
    """Values the clips never reach (uniform over the whole log-mel range), batch 2."""
    mel = rng.uniform(-1.5, 1.5, (2, 80, 3000)).astype(np.float32)
    got, want = as_taps(max_encoder.run(mel)), torch_taps(torch_model.encoder, mel)
    for i in range(2):
        assert_parity(item(got, i), item(want, i), label=f"noise item {i}")


def test_a_call_returns_the_last_tap_and_matches_pytorch(speech_windows, speech_reference, speech_taps, max_encoder):
    """The taps the golden, stage-by-stage and self-check tests read are the outputs of the graph users run: a
    call, as users make it (only the output reaches the host), returns the last bit for bit (the CPU encoder
    repeats bit-identically), and against PyTorch directly it meets the tolerances on the whole speech batch."""
    names, mels = speech_windows
    out = max_encoder(mels)
    assert len(speech_taps) == len(encoder_tap_names(max_encoder.cfg.dims.n_audio_layer))
    np.testing.assert_array_equal(out, speech_taps[-1])
    for i, name in enumerate(names):
        assert_parity({"ln_post": out[i]}, {"ln_post": speech_reference["ln_post"][i]}, label=name)


def test_reference_taps_equal_whisper_encoder_forward(speech_windows, speech_reference, torch_model):
    """`reference.torch_taps` re-implements AudioEncoder.forward step by step: its output must be
    openai-whisper's own `model.encoder(mel)` (same ops in the same order: measured bit-identical)."""
    with torch.no_grad():
        want = torch_model.encoder(torch.from_numpy(speech_windows[1])).numpy()
    np.testing.assert_array_equal(speech_reference["ln_post"], want)


@pytest.mark.parametrize("position", [pytest.param(p, marks=native_bf16_or_slow()) for p in ("first", "later")])
def test_bfloat16_output_matches_pytorch_float32(position, speech_windows, speech_reference, max_bf16_encoder):
    names, mels = speech_windows
    picked = [i for i, n in enumerate(names) if n.endswith("@0s") == (position == "first")]
    out = max_bf16_encoder(mels[picked])
    for j, i in enumerate(picked):
        assert_parity({"ln_post": out[j]}, {"ln_post": speech_reference["ln_post"][i]}, "bfloat16", label=names[i])


@pytest.mark.slow
def test_exact_products_match_pytorch_at_every_stage(speech_windows, speech_reference, bundled):
    """The GPU's float32 graph (products from bfloat16-exact parts, maxwhisper/exact.py; the convolutions
    as matrix products) run on the CPU, where products are float32's: its arithmetic alone must meet the
    float32 tolerances (its own compile: slow)."""
    from maxwhisper.encoder import get_encoder
    names, mels = speech_windows
    encoder = get_encoder(bundled, "cpu", "float32", exact_products=True, conv_as_matmul=True)
    assert encoder.cfg.weight_parts == 1  # Whisper's checkpoints are half precision: TF32 holds them exactly
    got = as_taps(encoder.run(mels))
    for i, name in enumerate(names):
        assert_parity(item(got, i), item(speech_reference, i), label=f"exact products {name}")
