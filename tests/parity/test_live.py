"""Live parity: the MAX encoder and openai-whisper's PyTorch encoder on the same input, now."""
import numpy as np
import pytest

from conftest import CLIPS
from maxwhisper.reference import torch_taps
from tests.helpers import as_taps, assert_parity

pytestmark = pytest.mark.parity


@pytest.mark.parametrize("clip", [c.stem for c in CLIPS])
def test_every_stage_matches_pytorch_on_speech(clip, clip_mels, max_taps_encoder, torch_model):
    mel = clip_mels[clip]
    assert_parity(as_taps(max_taps_encoder.run(mel)), torch_taps(torch_model.encoder, mel))


def test_every_stage_matches_pytorch_on_a_batch_of_noise(max_taps_encoder, torch_model, rng):
    """Values the clips never reach (uniform over the whole log-mel range), batch 2."""
    mel = rng.uniform(-1.5, 1.5, (2, 80, 3000)).astype(np.float32)
    assert_parity(as_taps(max_taps_encoder.run(mel)), torch_taps(torch_model.encoder, mel))


def test_production_graph_equals_taps_graph(clip_mels, max_encoder, max_taps_encoder):
    """The graph users run (no taps) computes what the parity suite checked."""
    mel = clip_mels[CLIPS[0].stem]
    assert_parity({"ln_post": max_encoder(mel)}, {"ln_post": max_taps_encoder.run(mel)[-1]})


@pytest.mark.parametrize("clip", [c.stem for c in CLIPS])
def test_bfloat16_output_matches_pytorch_float32(clip, clip_mels, max_bf16_encoder, torch_model):
    mel = clip_mels[clip]
    expected = torch_taps(torch_model.encoder, mel)["ln_post"]
    assert_parity({"ln_post": max_bf16_encoder(mel)}, {"ln_post": expected}, "bfloat16")
