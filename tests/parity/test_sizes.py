"""Every official size, structurally, with seeded random weights against goldens from PyTorch.

All of them are `slow`: each compiles a new graph (about 100 s to several minutes), and the size cases together
peaked at 16.9 GB of RSS in one process (with test_decoder_sizes.py's; Zen 4 EPYC, 2026-11-28). tiny, which
shares tiny.en's compiled graph, runs by default in test_golden.py.
"""
import weakref

import pytest

from maxwhisper import weights
from maxwhisper.encoder import get_encoder, release
from maxwhisper.golden import RANDOM_SIZES, SEED, random_mel
from tests.helpers import assert_freed_on_release, as_taps, assert_parity, golden_slices, load_golden

pytestmark = pytest.mark.parity


@pytest.mark.parametrize("size", [pytest.param(s, marks=pytest.mark.slow) for s in RANDOM_SIZES if s != "tiny"])
def test_random_weights_match_golden(size, released):
    loaded = weights.load(f"random:{size}:{SEED}")
    released(loaded)
    golden, meta = load_golden(f"random-{size}")
    assert meta["weights_sha256"] == loaded.encoder_sha256, "random weights changed: run `make golden`"
    encoder = get_encoder(loaded, "cpu", "float32")
    taps = as_taps(encoder.run(random_mel(loaded.dims.n_mels)))
    assert taps["ln_post"].shape == (1, loaded.dims.n_audio_ctx, loaded.dims.n_audio_state)
    assert_parity(*golden_slices(golden, taps))
    held = weakref.ref(encoder)
    del encoder
    assert_freed_on_release(held, release, loaded.encoder_sha256)
