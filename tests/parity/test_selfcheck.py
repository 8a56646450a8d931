"""The suite checks itself: bugs are injected into the encoder and the parity comparison must fail for
every one, at the stage where the bug lives.

Graph bugs (`maxwhisper.encoder.BUGS`): the classes that broke public MAX Whisper encoders, and subtle
ones that move the output by 0.1% to 1% (a wrong LayerNorm constant, an approximation, a slightly
wrong attention scale). All mutants live in one graph (one compile, seconds cached) and share the real weights; a gross mutant is built only as deep as the stage it must fail at
(`maxwhisper.encoder.BUG_DEPTH`), which shortens the compile. Weight bugs (a small scale or offset in one tensor, as a slip in a layout
conversion would make) bind mutated weights to the cached taps graph: no compile.
"""
import numpy as np
import pytest

from conftest import CLIPS
from maxwhisper import weights
from maxwhisper.encoder import BUGS, tap_names
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
    "ln_eps": "block0",             # LayerNorm epsilon 1e-4 instead of 1e-5
    "ln_unbiased_var": "block0",    # LayerNorm variance over d - 1 (torch.var's default) instead of d
    "mlp_tanh_gelu": "block0",      # tanh GELU in the MLPs only (the convolutions keep erf)
    "attn_scale_off": "block0",     # 1/sqrt(d_head + 1) instead of 1/sqrt(d_head): 0.8% off
}
SUBTLE = ("ln_eps", "ln_unbiased_var", "mlp_tanh_gelu", "attn_scale_off")


def scaled(name: str, factor: float = 1.0, offset: float = 0.0):
    return name, lambda t: t * factor + offset


# (tensor, mutation, first failing stage): each a slip of well under 1% in one tensor.
WEIGHT_BUGS = {
    "fc2_weight_x1.002": (*scaled("encoder.blocks.1.mlp.2.weight", factor=1.002), "block1"),
    "conv1_bias_+1e-3": (*scaled("encoder.conv1.bias", offset=1e-3), "conv1"),
    "ln_post_gain_x1.003": (*scaled("encoder.ln_post.weight", factor=1.003), "ln_post"),
}


@pytest.fixture(scope="session")
def selfcheck_input(torch_model, clip_mels):
    mel = clip_mels[CLIPS[0].stem]
    return mel, torch_taps(torch_model.encoder, mel)


@pytest.fixture(scope="session")
def mutant_taps(bundled, selfcheck_input):
    """{bug: taps} on the first clip: graph bugs from one graph holding every mutant, weight bugs from the
    taps graph with mutated weights."""
    from maxwhisper.encoder import get_encoder
    mel, _ = selfcheck_input
    mutants = get_encoder(bundled, "cpu", "float32", taps=True, variants=[frozenset([b]) for b in BUGS])
    names = tap_names(bundled.dims.n_audio_layer)
    out = {bug: dict(zip(names, taps)) for bug, taps in zip(BUGS, mutants.run_variants(mel))}
    for bug, (name, mutate, _) in WEIGHT_BUGS.items():
        loaded = weights.LoadedModel(bundled.dims, {**bundled.state_dict, name: mutate(bundled.state_dict[name])}, bug)
        out[bug] = as_taps(get_encoder(loaded, "cpu", "float32", taps=True).run(mel))
    return out


@pytest.fixture(scope="session")
def mutant_results(mutant_taps, selfcheck_input):
    expected = selfcheck_input[1]
    return {bug: compare_taps(taps, {k: expected[k] for k in taps}) for bug, taps in mutant_taps.items()}


def test_every_bug_class_is_listed():
    assert set(FIRST_STAGE) == set(BUGS) and set(SUBTLE) < set(BUGS)


@pytest.mark.parametrize("bug", [*BUGS, *WEIGHT_BUGS])
def test_parity_fails_at_the_stage_of_the_bug(bug, mutant_results):
    failing = [r.name for r in mutant_results[bug] if not r.ok]
    want = FIRST_STAGE.get(bug) or WEIGHT_BUGS[bug][2]
    assert failing, f"injected bug {bug!r} passed every parity check"
    assert failing[0] == want, f"{bug}: first failing stage {failing[0]}, expected {want}"


@pytest.mark.parametrize("bug", [*SUBTLE, *WEIGHT_BUGS])
def test_subtle_bugs_move_the_output_by_about_one_percent_or_less(bug, mutant_taps, selfcheck_input):
    """What makes them subtle: the encoder output's relative rms change, measured (AVX2 EPYC, the long clip):
    ln_eps 0.095%, ln_unbiased_var 0.57%, mlp_tanh_gelu 0.23%, attn_scale_off 1.0%, fc2 x1.002 0.20%,
    conv1 bias +1e-3 0.61%, ln_post gain x1.003 0.33%; a cosine or a loose max-abs check lets them through."""
    got, want = mutant_taps[bug]["ln_post"].astype(np.float64), selfcheck_input[1]["ln_post"]
    assert np.sqrt(np.sum((got - want) ** 2) / np.sum(want.astype(np.float64) ** 2)) < 0.015


def test_real_encoder_passes_the_same_check(max_taps_encoder, selfcheck_input):
    mel, expected = selfcheck_input
    results = compare_taps(as_taps(max_taps_encoder.run(mel)), expected)
    assert all(r.ok for r in results)


def test_catch_rate_is_total(mutant_results, mutant_taps, selfcheck_input, capsys):
    want = selfcheck_input[1]["ln_post"].astype(np.float64)
    caught = [bug for bug, results in mutant_results.items() if not all(r.ok for r in results)]
    subtle = [*SUBTLE, *WEIGHT_BUGS]
    change = {bug: np.sqrt(np.sum((mutant_taps[bug]["ln_post"] - want) ** 2) / np.sum(want ** 2)) for bug in subtle}
    with capsys.disabled():
        print(f"\nself-check: parity caught {len(caught)}/{len(mutant_results)} injected bugs "
              f"({sum(b in caught for b in subtle)}/{len(subtle)} subtle; output change "
              + ", ".join(f"{b} {c:.2g}" for b, c in change.items()) + ")")
    assert len(caught) == len(mutant_results)
