"""The MAX encoder against golden tensors stored from the PyTorch reference (`make golden`)."""
import json

import numpy as np
import pytest

from conftest import CLIPS
from maxwhisper import weights
from maxwhisper.golden import SEED, STAT_NAMES, random_mel, stats
from tests.helpers import as_taps, assert_parity, golden_slices, load_golden

pytestmark = pytest.mark.parity


@pytest.mark.parametrize("clip", [c.stem for c in CLIPS])
def test_front_end_has_not_drifted(clip, clip_mels):
    """The log-mel the goldens were made from: a drift here (torch's STFT, resampling) shifts every stage."""
    golden, _ = load_golden(f"tiny.en-{clip}")
    # log-mel values lie in [-1.5, 1.5]; torch's STFT reproduces them to ~1e-7 run to run.
    np.testing.assert_allclose(stats(clip_mels[clip]), golden["mel.stats"], atol=1e-5)


@pytest.mark.parametrize("clip", [c.stem for c in CLIPS])
def test_taps_match_golden_slices(clip, clip_mels, max_encoder):
    golden, meta = load_golden(f"tiny.en-{clip}")
    taps = as_taps(max_encoder.run(clip_mels[clip]))
    assert list(taps) == json.loads(meta["taps"])
    assert_parity(*golden_slices(golden, taps))


@pytest.mark.parametrize("clip", [c.stem for c in CLIPS])
def test_tap_statistics_match_golden(clip, clip_mels, max_encoder):
    """Whole-tensor fingerprints: catch errors outside the stored rows."""
    golden, _ = load_golden(f"tiny.en-{clip}")
    for name, t in as_taps(max_encoder.run(clip_mels[clip])).items():
        want = golden[f"{name}.stats"]
        # In units of the tap's rms (want[5]), measured worst over the three clips: mean, std, mean |x| and
        # rms agree to 1.0e-6; min and max, single elements, to 5.9e-5 (block3's max channel, |x| = 657).
        atol = want[5] * np.array([1e-5, 1e-5, 3e-4, 3e-4, 1e-5, 1e-5])
        np.testing.assert_array_less(np.abs(stats(t[0]) - want), atol,
                                     err_msg=f"stage {name}: stats {STAT_NAMES} differ by more than {atol}")


@pytest.mark.parametrize("clip", [c.stem for c in CLIPS])  # the decoder's goldens: test_decoder_parity.py
def test_golden_metadata_matches_bundled_weights(clip, bundled):
    _, meta = load_golden(f"tiny.en-{clip}")
    assert meta["weights_sha256"] == bundled.encoder_sha256, "bundled weights changed: run `make golden`"
    assert meta["dtype"] == "float32" and "version.torch" in meta


def test_random_tiny_weights_match_golden(max_encoder_random_tiny):
    golden, meta = load_golden("random-tiny")
    assert meta["weights_sha256"] == weights.load(f"random:tiny:{SEED}").encoder_sha256, "random weights changed: make golden"
    taps = as_taps(max_encoder_random_tiny.run(random_mel(80)))
    assert_parity(*golden_slices(golden, taps))
