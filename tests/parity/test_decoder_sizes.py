"""The MAX decoder at every official size, with seeded random weights, against PyTorch's TextDecoder live.

tiny.en's dimensions run by default (they share the bundled model's compiled graphs), and with the
blocks as graph ops instead of the fused CPU op (what the GPU runs; slow). The other sizes
compile their own two graphs (minutes each on 2 cores; large-v3 needs several GB of RAM): marked slow.
Features are dense N(0, 1) from a fixed seed; tokens are random ids; the protocol is the parity suite's
(a 3-token prefill, then single steps), checked stage by stage with the decoder tolerances.
"""
import gc

import numpy as np
import pytest

from maxwhisper import weights
from maxwhisper.decoder import get_decoder
from maxwhisper.golden import RANDOM_SIZES, SEED
from maxwhisper.reference import torch_decoder_taps
from tests.helpers import assert_parity, decoder_taps

pytestmark = pytest.mark.parity
SIZES = [pytest.param("tiny.en", True, id="tiny.en")] + [pytest.param(s, True, marks=pytest.mark.slow, id=s) for s in RANDOM_SIZES]
# the graph-op decoder (what the GPU runs) on the CPU, against the same reference: its own compile, so slow
SIZES.append(pytest.param("tiny.en", False, marks=pytest.mark.slow, id="tiny.en-graph-ops"))


@pytest.mark.parametrize("size, fused", SIZES)
def test_random_weights_decoder_matches_pytorch(size, fused):
    loaded = weights.load(f"random:{size}:{SEED}")
    dims = loaded.dims
    rng = np.random.default_rng(SEED)
    features = rng.standard_normal((1, dims.n_audio_ctx, dims.n_audio_state)).astype(np.float32)
    tokens = rng.integers(0, dims.n_vocab, (1, 10))
    taps = decoder_taps(get_decoder(loaded, "cpu", fused=fused), features, tokens, prefill=3)
    assert taps["logits"].shape == (1, 10, dims.n_vocab)
    expected = torch_decoder_taps(loaded.whisper_model("cpu").eval().decoder, tokens, features)
    assert_parity(taps, expected, "decoder-float32", label=size)
    assert (taps["logits"].argmax(-1) == expected["logits"].argmax(-1)).all()
    del loaded
    gc.collect()
