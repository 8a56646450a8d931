"""The MAX encoder on GPU against PyTorch float32 on CPU (skipped, with the reason, without a GPU).

Tolerances are the CPU-measured ones of `maxwhisper.metrics.TOLERANCES` for the same dtype.
"""
import pytest

from conftest import CLIPS
from maxwhisper.reference import torch_taps
from tests.helpers import assert_parity

pytestmark = [pytest.mark.parity, pytest.mark.gpu]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_gpu_encoder_matches_pytorch(dtype, bundled, clip_mels, torch_model):
    from maxwhisper.encoder import get_encoder
    encoder = get_encoder(bundled, "gpu", dtype)
    for clip in CLIPS:
        mel = clip_mels[clip.stem]
        expected = torch_taps(torch_model.encoder, mel)["ln_post"]
        assert_parity({"ln_post": encoder(mel)}, {"ln_post": expected}, dtype)


def test_gpu_max_path_gives_the_reference_tokens(expected_transcripts):
    from maxwhisper.pipelines import Pipeline
    pipe = Pipeline("max", "bundled", device="gpu")
    for clip in CLIPS:
        result = pipe.transcribe(clip, word_timestamps=True)
        assert [s["tokens"] for s in result["segments"]] == expected_transcripts[clip.stem]["tokens"], clip.stem


def test_gpu_pytorch_path_transcribes(expected_transcripts):
    """openai-whisper fp16 on CUDA: same words as the CPU reference within fp16 noise. The 0.1 bound is
    not yet measured on a GPU (none was lent while writing this); it allows one word in ten to move."""
    from maxwhisper.metrics import word_error_rate
    from maxwhisper.pipelines import Pipeline
    pipe = Pipeline("gpu", "bundled")
    for clip in CLIPS:
        assert word_error_rate(expected_transcripts[clip.stem]["text"], pipe.transcribe(clip)["text"]) < 0.1
