"""The MAX decoder against PyTorch's TextDecoder: golden taps, live taps, every step of a real decode,
and the self-check that injects the bugs that typically break decoder ports."""
import json

import numpy as np
import pytest
import torch

from conftest import CLIP_NAMES
from maxwhisper.decoder import BUGS
from maxwhisper.golden import STAT_NAMES, decoder_tokens, stats
from maxwhisper.metrics import compare_taps, on_device
from maxwhisper.reference import torch_decoder_taps
from tests.helpers import DECODER_PARAMS, DECODERS, assert_parity, decoder_named, decoder_taps, load_golden

pytestmark = pytest.mark.parity
PREFILL = 3  # the protocol: a prefill of 3 tokens (start-of-transcript and 2 more), then single steps


@pytest.mark.parametrize("kernel", ["cpu", "warps"])
@pytest.mark.parametrize("clip", CLIP_NAMES)
def test_decoder_taps_match_golden(clip, kernel, clip_features, bundled):
    golden, meta = load_golden(f"tiny.en-decoder-{clip}")
    assert meta["weights_sha256"] == bundled.decoder_sha256, "bundled weights changed: run `make golden`"
    taps = decoder_taps(decoder_named(bundled, kernel), clip_features[clip], golden["tokens"], PREFILL)
    assert list(taps) == json.loads(meta["taps"])
    cols = golden["logits.columns"]
    actual = {n: t[0, :, :golden[f"{n}.slice"].shape[1]] for n, t in taps.items() if n != "logits"}
    actual["logits"] = np.take_along_axis(taps["logits"][0], cols, axis=-1)
    assert_parity(actual, {n: golden[f"{n}.slice"] for n in taps}, "decoder-float32")
    assert (taps["logits"][0].argmax(-1) == golden["logits.argmax"]).all()
    for name, t in taps.items():  # whole-tensor fingerprints, beyond the stored channels and columns
        want = golden[f"{name}.stats"]
        # measured agreement ~1e-6 of each tap's range; 1e-4 of it leaves room, the self-check's bugs move more
        np.testing.assert_allclose(stats(t[0]), want, atol=1e-4 * max(abs(want[2]), abs(want[3])),
                                   err_msg=f"stage {name}: stats {STAT_NAMES} differ")


# Every step kernel, on GPU too, against the same CPU reference, within the device's float32 limits
# (maxwhisper/metrics.py).
@pytest.mark.parametrize("kernel", DECODER_PARAMS)
@pytest.mark.parametrize("clip", CLIP_NAMES)
def test_decoder_taps_match_pytorch_live(clip, kernel, bundled, clip_features, torch_model, expected_transcripts):
    tokens = decoder_tokens(expected_transcripts[clip]["tokens"])
    taps = decoder_taps(decoder_named(bundled, kernel), clip_features[clip], tokens, PREFILL)
    assert_parity(taps, torch_decoder_taps(torch_model.decoder, tokens, clip_features[clip]),
                  on_device("decoder-float32", DECODERS[kernel][0]), label=f"{kernel} {clip}")


@pytest.mark.parametrize("clip", CLIP_NAMES)
def test_cross_attention_scores_match_pytorch(clip, bundled, clip_features, torch_model, expected_transcripts):
    """What openai-whisper's word alignment reads from the decoder, each block's cross-attention scores before the
    softmax, over a whole transcript in one pass (inference.MaxTextDecoder), against PyTorch's through the same
    forward hooks on cross_attn that whisper.timing.find_alignment installs; the logits too."""
    from whisper.model import disable_sdpa

    from maxwhisper.decoder import get_decoder
    tokens = decoder_tokens(expected_transcripts[clip]["tokens"])
    features = clip_features[clip]
    state = get_decoder(bundled, "cpu", cross_qk=True).new_state(features, 1)
    logits, scores = state.step(tokens), state.cross_qk_arrays()
    want = [None] * len(scores)
    hooks = [block.cross_attn.register_forward_hook(lambda _, ins, outs, i=i: want.__setitem__(i, outs[-1].numpy()))
             for i, block in enumerate(torch_model.decoder.blocks)]
    try:
        with torch.no_grad(), disable_sdpa():
            want_logits = torch_model.decoder(torch.from_numpy(tokens), torch.from_numpy(features)).numpy()
    finally:
        for hook in hooks:
            hook.remove()
    assert [s.shape for s in scores] == [w.shape for w in want] == [(1, 6, tokens.shape[1], 1500)] * 4
    for layer, (got, ref) in enumerate(zip(scores, want)):
        # measured on the short clip's transcript: at most 2.4e-6 of max|PyTorch| per layer (Zen 5 EPYC); the
        # alignment then gave every word's start and end exactly as PyTorch's did (225 words, 3 clips)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * np.abs(ref).max(), err_msg=f"block {layer}")
    assert_parity({"logits": logits}, {"logits": want_logits}, "decoder-float32", label=clip)


def test_cross_attention_scores_of_a_shared_prompt_are_every_row_s(bundled, clip_features, expected_transcripts):
    """A group whose rows share their prompt is decoded once and copied (DecoderState._prefill_group_once): its
    scores come back for every row, as one row's."""
    from maxwhisper.decoder import get_decoder
    tokens = decoder_tokens(expected_transcripts["short"]["tokens"])
    decoder = get_decoder(bundled, "cpu", cross_qk=True)
    one = decoder.new_state(clip_features["short"], 1)
    one.step(tokens)
    pair = decoder.new_state(clip_features["short"], 2)
    pair.step(np.repeat(tokens, 2, axis=0))
    for alone, both in zip(one.cross_qk_arrays(), pair.cross_qk_arrays()):
        assert both.shape == (2, *alone.shape[1:])
        np.testing.assert_array_equal(both, np.repeat(alone, 2, axis=0))


def decoding_task(torch_model, beam_size: int):
    from whisper.decoding import DecodingOptions, DecodingTask
    return DecodingTask(torch_model, DecodingOptions(language="en", beam_size=beam_size if beam_size > 1 else None,
                                                     fp16=False))


def decode_with(task, inference, mel) -> None:
    """Run openai-whisper's decoding loop on `mel` with `inference` in place of PyTorch's."""
    task.inference = inference
    if hasattr(task.decoder, "inference"):  # beam search reorders the caches through its own reference
        task.decoder.inference = inference
    with torch.no_grad():
        task.run(torch.from_numpy(mel))


class Recording:
    """PyTorch's Inference, every call to it recorded in order: ("logits", tokens, logits) and ("rearrange",
    source indices)."""

    def __init__(self, torch_inference):
        self.torch, self.calls = torch_inference, []

    def logits(self, tokens, audio_features):
        logits = self.torch.logits(tokens, audio_features)
        self.calls.append(("logits", tokens.numpy().copy(), logits.clone()))
        return logits

    def rearrange_kv_cache(self, source_indices):
        self.calls.append(("rearrange", list(source_indices)))
        self.torch.rearrange_kv_cache(source_indices)

    def cleanup_caching(self):
        self.torch.cleanup_caching()


@pytest.fixture(scope="module")
def torch_decodes(torch_model, clip_mels):
    """(clip, beam_size) -> PyTorch's recorded calls in a decode of the clip's first window, made once for every
    kernel's test: given the same logits, openai-whisper's loop makes the same calls again."""
    import functools

    @functools.cache
    def decode(clip: str, beam_size: int) -> list:
        task = decoding_task(torch_model, beam_size)
        recording = Recording(task.inference)
        decode_with(task, recording, clip_mels[clip])
        return recording.calls
    return decode


class Replay:
    """An Inference that returns PyTorch's recorded logits (so the decode follows PyTorch's path) after asking the
    MAX decoder for the same tokens, recording both at every step; it fails where the loop strays from the record."""

    def __init__(self, calls: list, max_inference):
        self.calls, self.max, self.steps = iter(calls), max_inference, []

    def logits(self, tokens, audio_features):
        kind, want_tokens, want = next(self.calls)
        assert kind == "logits" and np.array_equal(tokens.numpy(), want_tokens), "the decode left PyTorch's path"
        got = self.max.logits(tokens, audio_features)
        self.steps.append((want[:, -1].numpy().copy(), got[:, -1].numpy().copy()))
        return want.clone()  # openai-whisper's filters edit the logits in place

    def rearrange_kv_cache(self, source_indices):
        assert next(self.calls) == ("rearrange", list(source_indices)), "the decode left PyTorch's path"
        self.max.rearrange_kv_cache(source_indices)

    def cleanup_caching(self):
        self.max.cleanup_caching()


@pytest.mark.parametrize("kernel", ["cpu", "warps"])
@pytest.mark.parametrize("clip, beam_size", [(c, 1) for c in CLIP_NAMES] + [("numbers", 5)])
def test_logits_match_at_every_step_of_a_real_decode(clip, beam_size, kernel, bundled, torch_model, clip_mels,
                                                      torch_decodes):
    from maxwhisper.inference import MaxInference
    task = decoding_task(torch_model, beam_size)
    calls = torch_decodes(clip, beam_size)
    replay = Replay(calls, MaxInference(decoder_named(bundled, kernel), len(task.initial_tokens)))
    decode_with(task, replay, clip_mels[clip])
    assert next(replay.calls, None) is None, "the decode stopped before PyTorch's did"
    assert len(replay.steps) > 5, "the decode stopped before it started"
    for i, (want, got) in enumerate(replay.steps):
        # An argmax flip would change the transcript, so it must never happen.
        assert np.abs(got - want).max() <= LOGITS_ATOL, f"step {i}: max |diff| {np.abs(got - want).max():.3g}"
        assert (got.argmax(-1) == want.argmax(-1)).all(), f"step {i}: the MAX decoder picks another token"


# float32, measured worst over every step of these decodes (greedy on the 3 clips, beam 5 on numbers):
# max |diff| 1.0e-4 on logits up to |36| (fused CPU op, AVX2 EPYC; the graph-op decoder 5.4e-5); 2.5x that.
# On the Zen 5 EPYC: decoder_block 4.0e-5, the warp kernels' emulation 6.9e-5 (beam 5 on numbers, both).
LOGITS_ATOL = 2.5e-4


# --- self-check: the bugs that break decoder ports, each caught at the stage where it lives -------

FIRST_STAGE = {
    "no_causal_mask": "block0",      # the prompt's earlier tokens see later ones
    "cache_off_by_one": "block0",    # each step forgets the previous token's keys and values
    "pos_offset_reset": "embed",     # single steps get position 0 instead of their offset
    "stale_cross_window": "block0",  # cross-attention over the previous 30 s window
    "kv_swapped": "block0",          # self-attention keys and values trade places
    "untied_logits": "logits",       # the output projection is not the embedding's transpose
}


@pytest.fixture(scope="session")
def decoder_mutant_taps(bundled, torch_model, clip_features, expected_transcripts):
    """(PyTorch's taps, {bug: the mutant's taps}) on the numbers clip, its window decoded after the short
    clip's window (so a stale cross-attention window shows). Same compiled graphs, bound to each mutant's weights."""
    from maxwhisper.decoder import get_decoder
    tokens = decoder_tokens(expected_transcripts["numbers"]["tokens"])
    feats = clip_features["numbers"]
    mutants = {}
    for bug in BUGS:
        mutant = get_decoder(bundled, "cpu", "float32", bugs={bug})
        mutant.new_state(clip_features["short"])  # the window before
        mutants[bug] = decoder_taps(mutant, feats, tokens, PREFILL)
    return torch_decoder_taps(torch_model.decoder, tokens, feats), mutants


# Judged by the CPU's limits and by the GPU's (about 4x what an H100 measured): each must catch every bug.
@pytest.fixture(scope="session", params=["decoder-float32", "decoder-float32-gpu"])
def decoder_mutant_results(request, decoder_mutant_taps):
    """{bug: per-stage results} under one tolerance table."""
    expected, mutants = decoder_mutant_taps
    return {bug: compare_taps(taps, expected, request.param) for bug, taps in mutants.items()}


def test_every_decoder_bug_class_is_listed():
    assert set(FIRST_STAGE) == set(BUGS)


@pytest.mark.parametrize("bug", BUGS)
def test_parity_fails_at_the_stage_of_the_decoder_bug(bug, decoder_mutant_results):
    failing = [r.name for r in decoder_mutant_results[bug] if not r.ok]
    assert failing, f"injected bug {bug!r} passed every parity check"
    assert failing[0] == FIRST_STAGE[bug], f"{bug}: first failing stage {failing[0]}, expected {FIRST_STAGE[bug]}"


def test_decoder_catch_rate_is_total(decoder_mutant_results, capsys):
    caught = [bug for bug, results in decoder_mutant_results.items() if not all(r.ok for r in results)]
    with capsys.disabled():
        print(f"\ndecoder self-check: parity caught {len(caught)}/{len(BUGS)} injected bug classes")
    assert len(caught) == len(BUGS)
