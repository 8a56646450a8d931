"""The suite checks itself: each bug class that broke public MAX Whisper encoders is injected into the
encoder builder, and the parity comparison must fail for every one, at the stage where the bug lives.

All mutants live in one graph (one compile, about 200 s cold, 4 s cached) and share the real weights.
"""
import pytest

from conftest import CLIPS
from maxwhisper.encoder import BUGS
from maxwhisper.metrics import compare_taps
from maxwhisper.reference import torch_taps
from tests.helpers import as_taps

pytestmark = pytest.mark.parity

# Where each bug first shows, given the per-stage float32 tolerances.
FIRST_STAGE = {
    "conv_no_shift": "conv1",       # a convolution without shifted taps
    "stride_by_slicing": "conv2",   # stride 2 done by slicing the input
    "no_pos_emb": "pos_emb",        # missing positional embedding
    "tanh_gelu": "conv1",           # tanh GELU instead of erf
    "attn_scale": "block0",         # 1/d_head instead of 1/sqrt(d_head)
    "no_ln_post": "ln_post",        # missing final layer norm
    "mel_layout": "conv1",          # mel reshaped instead of transposed: same shape, wrong features
    "transposed_weight": "block0",  # attention output projection not transposed
}


@pytest.fixture(scope="session")
def mutant_results(bundled, torch_model, clip_mels):
    """{bug: per-stage parity results} on the first clip, from one graph holding every mutant."""
    from maxwhisper.encoder import get_encoder
    mutants = get_encoder(bundled, "cpu", "float32", taps=True, variants=[frozenset([b]) for b in BUGS])
    mel = clip_mels[CLIPS[0].stem]
    expected = torch_taps(torch_model.encoder, mel)
    return {bug: compare_taps(as_taps(taps), expected) for bug, taps in zip(BUGS, mutants.run_variants(mel))}


def test_every_bug_class_is_listed():
    assert set(FIRST_STAGE) == set(BUGS)


@pytest.mark.parametrize("bug", BUGS)
def test_parity_fails_at_the_stage_of_the_bug(bug, mutant_results):
    failing = [r.name for r in mutant_results[bug] if not r.ok]
    assert failing, f"injected bug {bug!r} passed every parity check"
    assert failing[0] == FIRST_STAGE[bug], f"{bug}: first failing stage {failing[0]}, expected {FIRST_STAGE[bug]}"


def test_real_encoder_passes_the_same_check(max_taps_encoder, torch_model, clip_mels):
    mel = clip_mels[CLIPS[0].stem]
    results = compare_taps(as_taps(max_taps_encoder.run(mel)), torch_taps(torch_model.encoder, mel))
    assert all(r.ok for r in results)


def test_catch_rate_is_total(mutant_results, capsys):
    caught = [bug for bug, results in mutant_results.items() if not all(r.ok for r in results)]
    with capsys.disabled():
        print(f"\nself-check: parity caught {len(caught)}/{len(BUGS)} injected bug classes")
    assert len(caught) == len(BUGS)
