"""The suite checks itself: bugs are injected into the encoder and the parity comparison must fail for
every one, at the stage where the bug lives.

Binding bugs are those a wrong weight or input expresses exactly: a convolution without its shifted taps
(outer taps zero), a missing positional embedding, a wrong attention scale (a scaled query projection), an
untransposed projection, a reshaped mel, and small slips of scale or offset in one tensor, as a layout
conversion would make. They run the encoder graph (compiled for the parity tests) with the mutated weights or
mel: no compile, so they run in `make test`. Graph bugs (`maxwhisper.encoder.BUGS`: stride by slicing, a
tanh GELU, a missing final LayerNorm, and subtle ones, a wrong LayerNorm constant or variance or an MLP-only
tanh GELU) live in one graph of their own, each mutant built only as deep as the stage it must fail at. That graph's cold compile
took 212 s on 2 cores, a seventh of the cold `make test` budget, so those cases are `slow` (tox -e slow).
"""
import numpy as np
import pytest

from conftest import CLIPS
from maxwhisper import weights
from maxwhisper.encoder import BUGS
from maxwhisper.stages import encoder_tap_names
from maxwhisper.metrics import compare_taps
from maxwhisper.reference import torch_taps
from tests.helpers import as_taps

pytestmark = pytest.mark.parity

# Where each graph bug first shows, given the per-stage float32 tolerances.
FIRST_STAGE = {
    "stride_by_slicing": "conv2",   # stride 2 done by slicing the input
    "tanh_gelu": "conv1",           # tanh GELU instead of erf
    "no_ln_post": "ln_post",        # missing final layer norm
    "ln_eps": "block0",             # LayerNorm epsilon 1e-4 instead of 1e-5
    "ln_unbiased_var": "block0",    # LayerNorm variance over d - 1 (torch.var's default) instead of d
    "mlp_tanh_gelu": "block0",      # tanh GELU in the MLPs only (the convolutions keep erf)
}
SUBTLE = ("ln_eps", "ln_unbiased_var", "mlp_tanh_gelu")
HEAD_DIM = 64  # every Whisper size


def in_blocks(suffixes: tuple[str, ...], change):
    """A mutation of the state dict applying `change` to every encoder.blocks.*.SUFFIX tensor."""
    return lambda sd: {k: change(v) if k.startswith("encoder.blocks.") and k.endswith(suffixes) else v
                       for k, v in sd.items()}


def changed(names: tuple[str, ...], change):
    """A mutation of the state dict applying `change` to the named tensors."""
    return lambda sd: {**sd, **{name: change(sd[name]) for name in names}}


def scaled(name: str, factor: float = 1.0, offset: float = 0.0):
    return changed((name,), lambda t: t * factor + offset)


def query_scaled(factor: float):
    """Scores scaled by `factor`: the query projection (weight and bias) scaled, as a wrong scale would."""
    return in_blocks(("attn.query.weight", "attn.query.bias"), lambda t: t * factor)


def centre_tap(weight):
    """A (out, in, 3) convolution kernel with only its centre tap."""
    out = weight.clone()
    out[:, :, [0, 2]] = 0
    return out


def reshaped_mel(mel):
    """What reshaping (batch, n_mels, frames) to (batch, frames, n_mels) instead of transposing feeds the convs."""
    b, m, f = mel.shape
    return np.ascontiguousarray(mel.reshape(b, f, m).transpose(0, 2, 1))


# (state-dict mutation or None, mel mutation or None, first failing stage)
BINDING_BUGS = {
    # a convolution without shifted taps: the centre tap alone (a 1x1 convolution) is the kernel with its
    # outer taps zero, exactly
    "conv_no_shift": (changed(("encoder.conv1.weight", "encoder.conv2.weight"), centre_tap), None, "conv1"),
    "no_pos_emb": (scaled("encoder.positional_embedding", factor=0.0), None, "pos_emb"),
    "attn_scale": (query_scaled(1 / np.sqrt(HEAD_DIM)), None, "block0"),    # 1/d_head, not 1/sqrt(d_head)
    "transposed_weight": (in_blocks(("attn.out.weight",), lambda t: t.T.contiguous()), None, "block0"),
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


class Mutants:
    """Taps and parity results of each mutant on the first clip, computed on first use: the graph mutants all
    at once (one graph), the binding mutants one by one (the cached encoder graph loaded with the mutated
    weights, about 3 s a load here, or run on the mutated mel)."""

    def __init__(self, bundled, mel, expected):
        self.bundled, self.mel, self.expected = bundled, mel, expected
        self._graph: dict | None = None
        self._taps: dict = {}

    def taps(self, bug: str) -> dict:
        from maxwhisper.encoder import get_encoder
        if bug in BUGS:
            if self._graph is None:
                mutants = get_encoder(self.bundled, "cpu", "float32",
                                      variants=[frozenset([b]) for b in BUGS])
                names = encoder_tap_names(self.bundled.dims.n_audio_layer)
                self._graph = {b: dict(zip(names, taps)) for b, taps in zip(BUGS, mutants.run_variants(self.mel))}
            return self._graph[bug]
        if bug not in self._taps:
            mutate_weights, mutate_mel, _ = BINDING_BUGS[bug]
            loaded = self.bundled
            if mutate_weights:
                loaded = weights.LoadedModel(self.bundled.dims, mutate_weights(dict(self.bundled.state_dict)), bug)
            mel = mutate_mel(self.mel) if mutate_mel else self.mel
            self._taps[bug] = as_taps(get_encoder(loaded, "cpu", "float32").run(mel))
        return self._taps[bug]

    def results(self, bug: str, dtype: str = "float32") -> list:
        taps = self.taps(bug)
        return compare_taps(taps, {k: self.expected[k] for k in taps}, dtype)


@pytest.fixture(scope="session")
def mutants(bundled, selfcheck_input) -> Mutants:
    return Mutants(bundled, *selfcheck_input)


SLOW = pytest.mark.slow  # the graph mutants' own compile (module docstring)
GRAPH_CASES = [pytest.param(bug, marks=SLOW) for bug in BUGS]


def deepest_change(taps: dict, expected: dict) -> tuple[str, float]:
    """(stage, relative rms change) at the deepest stage a mutant computed: the output where it has one."""
    stage = list(taps)[-1]
    got, want = taps[stage].astype(np.float64), expected[stage].astype(np.float64)
    return stage, float(np.sqrt(np.sum((got - want) ** 2) / np.sum(want ** 2)))


def test_every_bug_class_is_listed():
    assert set(FIRST_STAGE) == set(BUGS) and set(SUBTLE) < set(BUGS) and set(SUBTLE_BINDING) < set(BINDING_BUGS)
    assert not set(BUGS) & set(BINDING_BUGS)


# The GPU's float32 limits (NMSE about 4x what an H100 measured) must catch every bug the CPU's catch, at
# the same stage: measured here on the CPU's mutants, whose changes dwarf either device's rounding.
@pytest.mark.parametrize("table", ["float32", "float32-gpu"])
@pytest.mark.parametrize("bug", [*BINDING_BUGS, *GRAPH_CASES])
def test_parity_fails_at_the_stage_of_the_bug(bug, table, mutants):
    failing = [r.name for r in mutants.results(bug, table) if not r.ok]
    want = FIRST_STAGE.get(bug) or BINDING_BUGS[bug][2]
    assert failing, f"injected bug {bug!r} passed every parity check"
    assert failing[0] == want, f"{bug}: first failing stage {failing[0]}, expected {want}"


@pytest.mark.parametrize("bug", [*SUBTLE_BINDING, *(pytest.param(b, marks=SLOW) for b in SUBTLE)])
def test_subtle_bugs_move_the_output_by_about_one_percent_or_less(bug, mutants):
    """What makes them subtle: the relative rms change at the deepest stage each computes (the encoder output,
    except the graph mutants built one block deep), measured (AVX2 EPYC, the first clip): attn_scale_off 1.0%,
    fc2 x1.002 0.20%, conv1 bias +1e-3 0.61%, ln_post gain x1.003 0.33% at the output; ln_eps 0.03%,
    ln_unbiased_var 0.24%, mlp_tanh_gelu 0.08% at block0. A cosine or a loose max-abs check lets them through."""
    stage, change = deepest_change(mutants.taps(bug), mutants.expected)
    assert change < 0.015, f"{bug} moves {stage} by {change:.2%}: not a subtle bug"


def test_real_encoder_passes_the_same_check(max_encoder, selfcheck_input):
    mel, expected = selfcheck_input
    results = compare_taps(as_taps(max_encoder.run(mel)), expected)
    assert all(r.ok for r in results)


@pytest.mark.parametrize("kind", ["binding", pytest.param("graph", marks=SLOW)])
def test_catch_rate_is_total(kind, mutants, capsys):
    bugs, subtle = (list(BINDING_BUGS), SUBTLE_BINDING) if kind == "binding" else (list(BUGS), SUBTLE)
    caught = [bug for bug in bugs if not all(r.ok for r in mutants.results(bug))]
    change = {bug: deepest_change(mutants.taps(bug), mutants.expected) for bug in subtle}
    with capsys.disabled():
        print(f"\nself-check ({kind} bugs): parity caught {len(caught)}/{len(bugs)} injected bugs "
              f"({sum(b in caught for b in subtle)}/{len(subtle)} subtle; change "
              + ", ".join(f"{b} {c:.2%} at {stage}" for b, (stage, c) in change.items()) + ")")
    assert len(caught) == len(bugs)
