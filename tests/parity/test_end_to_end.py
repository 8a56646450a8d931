"""End to end: openai-whisper's decoder fed MAX features yields the tokens it yields from PyTorch's."""
import pytest

from conftest import CLIPS
from maxwhisper.metrics import word_error_rate
from tests.helpers import native_bf16_or_slow, segment_tokens as tokens

pytestmark = pytest.mark.parity
CLIP_NAMES = [c.stem for c in CLIPS]


@pytest.mark.parametrize("clip", CLIP_NAMES)
def test_max_tokens_equal_pytorch_tokens(clip, transcribe):
    assert tokens(transcribe("max", clip)) == tokens(transcribe("cpu", clip))


@pytest.mark.parametrize("clip", CLIP_NAMES)
def test_max_tokens_equal_stored_reference(clip, transcribe, expected_transcripts):
    result = transcribe("max", clip)
    assert tokens(result) == expected_transcripts[clip]["tokens"]
    assert result["text"] == expected_transcripts[clip]["text"]


@pytest.mark.parametrize("clip", CLIP_NAMES)
def test_word_timestamps_agree_within_100ms(clip, transcribe):
    words = {impl: [w for s in transcribe(impl, clip)["segments"] for w in s["words"]] for impl in ("max", "cpu")}
    assert [w["word"] for w in words["max"]] == [w["word"] for w in words["cpu"]]
    for got, want in zip(words["max"], words["cpu"]):
        assert abs(got["start"] - want["start"]) <= 0.1 and abs(got["end"] - want["end"]) <= 0.1, (got, want)


@pytest.mark.parametrize("clip", [pytest.param(c, marks=native_bf16_or_slow()) for c in CLIP_NAMES])
def test_bfloat16_encoder_stays_within_bfloat16_noise(clip, transcribe, expected_transcripts):
    """bf16 features move tiny.en's decoder a little; PyTorch's own bf16 encoder moves it more.

    Measured WER against the float32 transcript (short / numbers / long): MAX bf16 0 / 0 / 0.011,
    PyTorch bf16 0 / 0.065 / 0.043. The limit, 0.02, is MAX's worst with room for one more word.
    """
    reference = expected_transcripts[clip]["text"]
    assert word_error_rate(reference, transcribe("max-bfloat16", clip)["text"]) <= 0.02


def test_long_clip_spans_several_windows(transcribe):
    result = transcribe("max", "long")
    assert result["audio_seconds"] > 60
    assert result["segments"][-1]["end"] > 30, "the second 30 s window was never decoded"


@pytest.mark.parametrize("clip", CLIP_NAMES)
def test_max_transcript_is_close_to_the_script(clip, transcribe):
    """The fixtures are real speech, and the MAX path understands it: tiny.en on espeak-ng audio, measured
    WER of the PyTorch transcript against the script: short 0.33 ("quick round-fark jump"), numbers 0.44,
    long 0.08; features that carry no speech give ~1.0."""
    from conftest import FIXTURES
    script = (FIXTURES / "audio" / f"{clip}.txt").read_text()
    assert word_error_rate(script, transcribe("max", clip)["text"]) < 0.6
