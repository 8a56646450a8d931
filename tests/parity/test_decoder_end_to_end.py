"""End to end: whisper.transcribe() with the MAX encoder and decoder gives openai-whisper's tokens,
under every decoding strategy transcribe() offers, on every fixture clip."""
import numpy as np
import pytest

from conftest import CLIP_NAMES
from tests.helpers import assert_words_agree, segment_tokens as tokens, transcribe_clip

pytestmark = pytest.mark.parity

# Decoding settings of whisper.transcribe(), each run on both paths with the same torch RNG seed.
STRATEGIES = {
    "greedy": {},
    "beam5": {"beam_size": 5},
    # logprob_threshold 0 fails every segment at T=0 (log-probabilities are negative), so each one falls
    # back to sampling at 0.4 with best_of=3: groups of 3 rows sharing one window, sampled (one fallback
    # level: a middle one, 0.2, cost a third more time in make test and decodes the same way).
    "fallback": {"temperature": (0.0, 0.4), "best_of": 3, "logprob_threshold": 0.0},
    "no_context": {"condition_on_previous_text": False},
    "prompt": {"initial_prompt": "A shopping list, read aloud."},  # the first window's prompt is text, not a window's tokens
}
# The long clip (69.5 s, 3 windows) under beam search takes ~40 s on PyTorch alone here: greedy (which
# conditions each window on the previous text) runs it by default, without previous text under `slow`;
# beam, fallback and prompt run on the two shorter clips. Those are one window each, with no previous text to
# condition on, so no_context decoded them exactly as greedy does (the same tokens from the same calls): it runs
# only where it changes something, on the long clip.
CASES = [(c, s) for c in CLIP_NAMES for s in STRATEGIES if c != "long" and s != "no_context"] + [
    ("long", "greedy"), pytest.param("long", "no_context", marks=pytest.mark.slow)]


def run(transcribe, impl: str, clip: str, strategy: str) -> dict:
    return transcribe(impl, clip, tuple(STRATEGIES[strategy].items()))


# "max-warps": the decoder step as decoder_warps's GPU kernels, emulated on the CPU. By default only greedy on
# the short clip, a smoke test of the whole path; its other cases are `slow` (21 s of a warm `make test` on the
# Zen 4 EPYC for long greedy, beam 5 and the fallback). What they would add is checked closer elsewhere: the
# kernels' logits against PyTorch's at every step of greedy decodes of every clip and of beam 5
# (test_decoder_parity.py), their per-layer taps over each clip's whole transcript, a long prefill, and groups
# sharing a prompt, reordered caches and two windows as properties (test_decoder_properties.py); the decoding
# loop around the kernel is the same Python as the CPU kernel's, whose cases all run.
WARPS_CASES = {("short", "greedy")}


def impl_cases():
    for case in CASES:
        (clip, strategy), marks = (case.values, case.marks) if hasattr(case, "values") else (case, ())
        yield pytest.param(clip, strategy, "max", marks=marks)
        yield pytest.param(clip, strategy, "max-warps", marks=() if (clip, strategy) in WARPS_CASES else pytest.mark.slow)


@pytest.mark.parametrize("clip, strategy, impl", list(impl_cases()))
def test_max_decoder_tokens_equal_openai_whisper(clip, strategy, impl, transcribe):
    want, got = run(transcribe, "cpu", clip, strategy), run(transcribe, impl, clip, strategy)
    assert want["segments"] and tokens(got) == tokens(want)
    assert got["text"] == want["text"]
    for a, b in zip(got["segments"], want["segments"]):  # the fallback's decisions hang on these
        assert a["temperature"] == b["temperature"], "a different fallback temperature was chosen"
        # float32 log-probabilities agree to ~1e-6 (measured); 1e-4 is far below any threshold's margin
        assert abs(a["avg_logprob"] - b["avg_logprob"]) < 1e-4
        assert abs(a["no_speech_prob"] - b["no_speech_prob"]) < 1e-4


def decodes_of(pipelines, monkeypatch, clip: str, strategy: str) -> tuple[dict, list]:
    """Transcribe `clip` on the max path as the `transcribe` fixture does; return the result and, per
    DecoderState of its decoding loop (not the word alignment's passes), (its group: rows per audio window, the
    tokens of its first step)."""
    from maxwhisper.decoder import DecoderState
    decodes, step, loop = [], DecoderState.step, pipelines["max"]._max_decoder

    def spied(self, tokens, *args, **kwargs):
        if self.length == 0 and self.decoder is loop:  # the state's first step (a state's id can be reused)
            decodes.append((self.group, np.asarray(tokens).copy()))
        return step(self, tokens, *args, **kwargs)
    monkeypatch.setattr(DecoderState, "step", spied)
    return transcribe_clip(pipelines["max"], clip, STRATEGIES[strategy]), decodes


def test_fallback_really_sampled_in_groups(pipelines, monkeypatch, transcribe):
    """Every window falls back to T=0.4, sampled as best-of-3: groups of 3 rows on one window's cache."""
    result, decodes = decodes_of(pipelines, monkeypatch, "short", "fallback")
    assert {s["temperature"] for s in result["segments"]} == {0.4}
    assert sorted(group for group, _ in decodes) == [1, 3], "one greedy decode at T=0, then a group of 3"
    assert tokens(result) == tokens(run(transcribe, "cpu", "short", "fallback"))


def test_fallback_encodes_each_window_once(transcribe, monkeypatch):
    """openai-whisper decodes a window again at each temperature it tries, and aligns its words after, asking
    the encoder for the window's features each time: the MAX path encodes the window and computes its cross
    keys/values once, and still gives openai-whisper's tokens."""
    from maxwhisper.decoder import get_decoder
    from maxwhisper.pipelines import Pipeline
    pipe = Pipeline("max", "bundled")  # the process's compiled graphs, a fresh encoder module
    decoder = get_decoder(pipe.loaded, "cpu")
    calls = {"encoder": 0, "cross": 0}

    def counted(name, fn):
        def call(*args):
            calls[name] += 1
            return fn(*args)
        return call
    monkeypatch.setattr(pipe._max_encoder, "encoder", counted("encoder", pipe._max_encoder.encoder))
    cross_model = decoder.cross_model
    monkeypatch.setattr(decoder, "cross_model", type("Counted", (), {"execute": staticmethod(counted("cross", cross_model.execute))})())
    got = transcribe_clip(pipe, "short", STRATEGIES["fallback"])
    assert {s["temperature"] for s in got["segments"]} == {0.4}  # two decodes of the one window
    assert calls == {"encoder": 1, "cross": 1}
    assert tokens(got) == tokens(run(transcribe, "cpu", "short", "fallback"))


def test_long_clip_conditions_on_previous_text(pipelines, monkeypatch, transcribe):
    """With previous text, later windows start from a prompt: the long clip's windows after the first
    prefill <|startofprev|> and the earlier segments' tokens (a multi-token prefill) and decode to its end."""
    import whisper
    sot_prev = whisper.tokenizer.get_tokenizer(multilingual=False).sot_prev
    result, decodes = decodes_of(pipelines, monkeypatch, "long", "greedy")
    assert result["segments"][-1]["end"] > 60 and len({s["seek"] for s in result["segments"]}) >= 3
    prompted = [first for _, first in decodes if first[0, 0] == sot_prev]
    assert len(prompted) >= 2, "the later windows were not conditioned on the previous text"
    assert all(first.shape[-1] > 10 for first in prompted)  # the earlier segments' tokens, prefilled at once
    assert tokens(result) == tokens(run(transcribe, "cpu", "long", "greedy"))


@pytest.mark.parametrize("clip", CLIP_NAMES)
def test_word_timestamps_equal_openai_whisper(clip, transcribe):
    """Word timing: openai-whisper's alignment over the MAX-decoded tokens, its decoder pass on MAX too."""
    # the alignment reads MAX's features and cross-attention scores (within 2.4e-6 of PyTorch's). Measured: every
    # word's start and end equal on all three clips (225 words, Zen 5 EPYC); 0.02 s allows one 20 ms frame, the
    # alignment's step.
    assert_words_agree(run(transcribe, "max", clip, "greedy"), run(transcribe, "cpu", clip, "greedy"), 0.02)


def test_word_alignment_runs_no_pytorch_decoder(monkeypatch):
    """The max path's word alignment (`model(mel, tokens)`) goes through MaxTextDecoder: PyTorch's TextDecoder
    never runs, and MAX's scores reach openai-whisper's hooks (the words are compared in the test above)."""
    import whisper.model

    def refuse(*args, **kwargs):
        raise AssertionError("PyTorch's TextDecoder ran")
    monkeypatch.setattr(whisper.model.TextDecoder, "forward", refuse)
    from maxwhisper.decoder import get_decoder
    from maxwhisper.pipelines import Pipeline
    pipe = Pipeline("max", "bundled")  # a new one: its whole-pass decoder not yet fetched
    compile_s = pipe.timings["compile"]
    result = transcribe_clip(pipe, "short")
    assert [w for s in result["segments"] for w in s["words"]]
    # that decoder's compile (or its load from MAX's cache) counts as the pipeline's, not as this decode's
    whole_pass = get_decoder(pipe.loaded, "cpu", cross_qk=True)
    assert result["timings"]["compile"] == pipe.timings["compile"] == compile_s + whole_pass.compile_s


def test_the_max_path_does_not_warn_of_cpu_inference_where_cuda_is_available(monkeypatch):
    """On a GPU box openai-whisper warns "Performing inference on CPU when CUDA is available" whenever its model is
    on the CPU, as the `max` path's is while its graphs run on the GPU (the H200 runs printed it for every `max`
    GPU case): the max path silences that one warning; the PyTorch CPU path, on the CPU indeed, keeps it."""
    import warnings

    import torch

    from maxwhisper.pipelines import Pipeline
    pipes = {impl: Pipeline(impl, "bundled") for impl in ("max", "cpu")}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for impl, warned in (("max", False), ("cpu", True)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            transcribe_clip(pipes[impl], "short")
        assert any("inference on CPU when CUDA" in str(w.message) for w in caught) is warned, impl
