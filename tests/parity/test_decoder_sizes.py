"""The MAX decoder at every official size, with seeded random weights, against PyTorch's TextDecoder live.

tiny.en's dimensions run by default with the random weights rounded to half, as every Whisper checkpoint
is stored (they share the bundled model's compiled graphs: the fused kernels read them in float16); slow
are the same float32 weights unrounded (the kernels' float32-storage build, its own compile) and the
blocks as graph ops instead of the fused CPU op (what the GPU runs). The warp kernels' emulation runs on
tiny.en by default and on every size under slow. The other sizes
compile their own two graphs (minutes each on 2 cores; large-v3 needs several GB of RAM): marked slow.
Features are dense N(0, 1) from a fixed seed; tokens are random ids; the protocol is the parity suite's
(a 3-token prefill, then single steps), checked stage by stage with the decoder tolerances, which were measured
on the bundled weights and real clips; on these inputs (tiny.en's random half weights) every stage measured
within a tenth of its limit on both CPU kernels (logits max|diff| 4.3e-6 and 3.3e-6 against 5.1e-5, NMSE
5.5e-13 and 4.2e-13 against 8e-11; Zen 5 EPYC).
"""
import weakref

import numpy as np
import pytest

from maxwhisper import weights
from maxwhisper.decoder import get_decoder, release
from maxwhisper.golden import RANDOM_SIZES, SEED
from maxwhisper.reference import torch_decoder_taps
from tests.helpers import assert_freed_on_release, assert_parity, decoder_taps, half_rounded

pytestmark = pytest.mark.parity
SIZES = [pytest.param("tiny.en", True, True, False, False, id="tiny.en"),
         # the warp kernels' emulation (the bundled model's compiled graph, other weights)
         pytest.param("tiny.en", True, True, False, True, id="tiny.en-warps")]
SIZES += [pytest.param(s, True, False, False, False, marks=pytest.mark.slow, id=s) for s in RANDOM_SIZES]
# every size's widths and head counts through the warp kernels, float32 weights (their other build)
SIZES += [pytest.param(s, True, False, False, True, marks=pytest.mark.slow, id=f"{s}-warps") for s in RANDOM_SIZES]
# float32 storage, the graph-op decoder (what the GPU runs) on the CPU, and that with the GPU's exact products
# (exact.py; float32 weights in three parts, half ones whole): their own compiles, so slow
SIZES += [pytest.param("tiny.en", True, False, False, False, marks=pytest.mark.slow, id="tiny.en-float32-storage"),
          pytest.param("tiny.en", False, False, False, False, marks=pytest.mark.slow, id="tiny.en-graph-ops"),
          pytest.param("tiny.en", False, False, True, False, marks=pytest.mark.slow, id="tiny.en-exact-products"),
          pytest.param("tiny.en", False, True, True, False, marks=pytest.mark.slow, id="tiny.en-exact-products-half")]


@pytest.mark.parametrize("size, fused, half, exact, warps", SIZES)
def test_random_weights_decoder_matches_pytorch(size, fused, half, exact, warps, released):
    loaded = weights.load(f"random:{size}:{SEED}")
    if half:
        loaded = half_rounded(loaded)
    released(loaded)
    dims = loaded.dims
    rng = np.random.default_rng(SEED)
    features = rng.standard_normal((1, dims.n_audio_ctx, dims.n_audio_state)).astype(np.float32)
    tokens = rng.integers(0, dims.n_vocab, (1, 10))
    decoder = get_decoder(loaded, "cpu", fused=fused, exact_products=exact, warps=warps)
    assert decoder.cfg.storage == ("float16" if half and fused else "float32") and decoder.cfg.warps == warps
    assert decoder.cfg.weight_parts == ((1 if half else 3) if exact else 0)  # half values: TF32-exact, whole
    taps = decoder_taps(decoder, features, tokens, prefill=3)
    assert taps["logits"].shape == (1, 10, dims.n_vocab)
    expected = torch_decoder_taps(loaded.whisper_decoder(), tokens, features)
    assert_parity(taps, expected, "decoder-float32", label=size)
    assert (taps["logits"].argmax(-1) == expected["logits"].argmax(-1)).all()
    held = weakref.ref(decoder)
    del decoder
    assert_freed_on_release(held, release, loaded.decoder_sha256)


@pytest.mark.slow
def test_language_detection_of_a_multilingual_model_runs_on_max(monkeypatch):
    """Multilingual models detect their language through `model.logits`, which the max path's MaxTextDecoder
    answers on MAX: its 99 language probabilities equal PyTorch's (random tiny weights; measured within 1.2e-7 on
    the short clip's features, the same language first; a new compile of tiny's multilingual graphs)."""
    import torch
    import whisper.model

    from maxwhisper.inference import MaxTextDecoder
    from maxwhisper.pipelines import Pipeline
    max_path, cpu_path = (Pipeline(impl, f"random:tiny:{SEED}") for impl in ("max", "cpu"))
    features = torch.from_numpy(np.random.default_rng(SEED).standard_normal((1, 1500, 384)).astype(np.float32))
    want = cpu_path.whisper.detect_language(features)[1][0]
    assert isinstance(max_path.whisper.decoder, MaxTextDecoder)
    with monkeypatch.context() as m:
        m.setattr(whisper.model.TextDecoder, "forward", lambda *a, **k: pytest.fail("PyTorch's TextDecoder ran"))
        got = max_path.whisper.detect_language(features)[1][0]
    assert got.keys() == want.keys() and len(want) == 99
    assert max(abs(got[k] - want[k]) for k in want) < 1e-5 and max(got, key=got.get) == max(want, key=want.get)
