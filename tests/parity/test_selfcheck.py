"""The suite checks itself: bugs are injected into the encoder and the parity comparison must fail for
every one, at the stage where the bug lives.

Graph bugs (`maxwhisper.encoder.BUGS`): a convolution or GELU done wrong, a missing final LayerNorm, and subtle
ones that move the output by 0.1% to 1% (a wrong LayerNorm constant, an approximation). All live in one graph
(one compile) and share the real weights; each mutant is built only as deep as the stage it must fail at
(`maxwhisper.encoder.BUG_DEPTH`), which shortens the compile. Binding bugs are those a wrong weight or input
expresses exactly (a missing positional embedding, a wrong attention scale, an untransposed projection, a
reshaped mel, and small slips of scale or offset in one tensor, as a layout conversion would make): they run
the cached taps graph with the mutated weights or mel, so they cost no compile.
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

# Where each graph bug first shows, given the per-stage float32 tolerances.
FIRST_STAGE = {
    "conv_no_shift": "conv1",       # a convolution without shifted taps
    "stride_by_slicing": "conv2",   # stride 2 done by slicing the input
    "tanh_gelu": "conv1",           # tanh GELU instead of erf
    "no_ln_post": "ln_post",        # missing final layer norm
    "ln_eps": "block0",             # LayerNorm epsilon 1e-4 instead of 1e-5
    "ln_unbiased_var": "block0",    # LayerNorm variance over d - 1 (torch.var's default) instead of d
    "mlp_tanh_gelu": "block0",      # tanh GELU in the MLPs only (the convolutions keep erf)
}
SUBTLE = ("ln_eps", "ln_unbiased_var", "mlp_tanh_gelu")
HEAD_DIM = 64  # every Whisper size


def in_blocks(suffix: str, change):
    """A mutation of the state dict applying `change` to encoder.blocks.*.`suffix`."""
    return lambda sd: {k: change(v) if k.startswith("encoder.blocks.") and k.endswith(suffix) else v
                       for k, v in sd.items()}


def scaled(name: str, factor: float = 1.0, offset: float = 0.0):
    return lambda sd: {**sd, name: sd[name] * factor + offset}


def query_scaled(factor: float):
    """Scores scaled by `factor`: the query projection (weight and bias) scaled, as a wrong scale would."""
    return lambda sd: in_blocks("attn.query.bias", lambda t: t * factor)(
        in_blocks("attn.query.weight", lambda t: t * factor)(sd))


def reshaped_mel(mel):
    """What reshaping (batch, n_mels, frames) to (batch, frames, n_mels) instead of transposing feeds the convs."""
    b, m, f = mel.shape
    return np.ascontiguousarray(mel.reshape(b, f, m).transpose(0, 2, 1))


# (state-dict mutation or None, mel mutation or None, first failing stage)
BINDING_BUGS = {
    "no_pos_emb": (scaled("encoder.positional_embedding", factor=0.0), None, "pos_emb"),
    "attn_scale": (query_scaled(1 / np.sqrt(HEAD_DIM)), None, "block0"),    # 1/d_head, not 1/sqrt(d_head)
    "transposed_weight": (in_blocks("attn.out.weight", lambda t: t.T.contiguous()), None, "block0"),
    "mel_layout": (None, reshaped_mel, "conv1"),                            # same shape, scrambled features
    # subtle: each a slip of about 1% or well under in one constant or tensor
    "attn_scale_off": (query_scaled(np.sqrt(HEAD_DIM / (HEAD_DIM + 1))), None, "block0"),  # 1/sqrt(d_head + 1)
    "fc2_weight_x1.002": (scaled("encoder.blocks.1.mlp.2.weight", factor=1.002), None, "block1"),
    "conv1_bias_+1e-3": (scaled("encoder.conv1.bias", offset=1e-3), None, "conv1"),
    "ln_post_gain_x1.003": (scaled("encoder.ln_post.weight", factor=1.003), None, "ln_post"),
}
SUBTLE_BINDING = ("attn_scale_off", "fc2_weight_x1.002", "conv1_bias_+1e-3", "ln_post_gain_x1.003")


@pytest.fixture(scope="session")
def selfcheck_input(torch_model, clip_mels):
    mel = clip_mels[CLIPS[0].stem]
    return mel, torch_taps(torch_model.encoder, mel)


@pytest.fixture(scope="session")
def mutant_taps(bundled, selfcheck_input):
    """{bug: taps} on the first clip: graph bugs from one graph holding every mutant, binding bugs from the
    taps graph with mutated weights or mel."""
    from maxwhisper.encoder import get_encoder
    mel, _ = selfcheck_input
    mutants = get_encoder(bundled, "cpu", "float32", taps=True, variants=[frozenset([b]) for b in BUGS])
    names = tap_names(bundled.dims.n_audio_layer)
    out = {bug: dict(zip(names, taps)) for bug, taps in zip(BUGS, mutants.run_variants(mel))}
    for bug, (mutate_weights, mutate_mel, _) in BINDING_BUGS.items():
        loaded = bundled
        if mutate_weights:
            loaded = weights.LoadedModel(bundled.dims, mutate_weights(dict(bundled.state_dict)), bug)
        out[bug] = as_taps(get_encoder(loaded, "cpu", "float32", taps=True).run(mutate_mel(mel) if mutate_mel else mel))
    return out


@pytest.fixture(scope="session")
def mutant_results(mutant_taps, selfcheck_input):
    expected = selfcheck_input[1]
    return {bug: compare_taps(taps, {k: expected[k] for k in taps}) for bug, taps in mutant_taps.items()}


def deepest_change(taps: dict, expected: dict) -> tuple[str, float]:
    """(stage, relative rms change) at the deepest stage a mutant computed: the output where it has one."""
    stage = list(taps)[-1]
    got, want = taps[stage].astype(np.float64), expected[stage].astype(np.float64)
    return stage, float(np.sqrt(np.sum((got - want) ** 2) / np.sum(want ** 2)))


def test_every_bug_class_is_listed():
    assert set(FIRST_STAGE) == set(BUGS) and set(SUBTLE) < set(BUGS) and set(SUBTLE_BINDING) < set(BINDING_BUGS)


@pytest.mark.parametrize("bug", [*BUGS, *BINDING_BUGS])
def test_parity_fails_at_the_stage_of_the_bug(bug, mutant_results):
    failing = [r.name for r in mutant_results[bug] if not r.ok]
    want = FIRST_STAGE.get(bug) or BINDING_BUGS[bug][2]
    assert failing, f"injected bug {bug!r} passed every parity check"
    assert failing[0] == want, f"{bug}: first failing stage {failing[0]}, expected {want}"


@pytest.mark.parametrize("bug", [*SUBTLE, *SUBTLE_BINDING])
def test_subtle_bugs_move_the_output_by_about_one_percent_or_less(bug, mutant_taps, selfcheck_input):
    """What makes them subtle: the relative rms change at the deepest stage each computes (the encoder output,
    except the graph mutants built one block deep), measured (AVX2 EPYC, the short clip): printed by
    test_catch_rate_is_total, all under 1.1%; a cosine or a loose max-abs check lets them through."""
    stage, change = deepest_change(mutant_taps[bug], selfcheck_input[1])
    assert change < 0.015, f"{bug} moves {stage} by {change:.2%}: not a subtle bug"


def test_real_encoder_passes_the_same_check(max_taps_encoder, selfcheck_input):
    mel, expected = selfcheck_input
    results = compare_taps(as_taps(max_taps_encoder.run(mel)), expected)
    assert all(r.ok for r in results)


def test_catch_rate_is_total(mutant_results, mutant_taps, selfcheck_input, capsys):
    caught = [bug for bug, results in mutant_results.items() if not all(r.ok for r in results)]
    subtle = [*SUBTLE, *SUBTLE_BINDING]
    change = {bug: deepest_change(mutant_taps[bug], selfcheck_input[1]) for bug in subtle}
    with capsys.disabled():
        print(f"\nself-check: parity caught {len(caught)}/{len(mutant_results)} injected bugs "
              f"({sum(b in caught for b in subtle)}/{len(subtle)} subtle; change "
              + ", ".join(f"{b} {c:.2%} at {stage}" for b, (stage, c) in change.items()) + ")")
    assert len(caught) == len(mutant_results)
