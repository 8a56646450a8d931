"""Weight loading: the CTranslate2 conversion is exact, and bad checkpoints fail in one clear line."""
import dataclasses
import warnings

import numpy as np
import pytest
import torch
from whisper.model import ModelDimensions, Whisper

from maxwhisper import weights
from maxwhisper.errors import MaxWhisperError

pytestmark = pytest.mark.unit
SMALL = ModelDimensions(80, 1500, 64, 2, 2, 300, 16, 64, 2, 2)


def test_bundled_is_tiny_en_and_fills_every_whisper_parameter(bundled):
    assert bundled.dims == weights.OFFICIAL_DIMS["tiny.en"]
    expected = Whisper(bundled.dims).state_dict()
    assert set(bundled.state_dict) == set(expected)
    for name, t in expected.items():
        assert bundled.state_dict[name].shape == t.shape, name
        assert bundled.state_dict[name].dtype == torch.float32, name
    # The CT2 positional table is Whisper's sinusoids rounded to float16 (FACTS: max diff 3e-4).
    from whisper.model import sinusoids
    assert torch.allclose(bundled.state_dict["encoder.positional_embedding"], sinusoids(1500, 384), atol=5e-4)


def test_every_name_openai_whisper_knows_is_an_official_size():
    import whisper
    assert set(weights.OFFICIAL_DIMS) == set(whisper._MODELS)


@pytest.mark.parametrize("name", weights.OFFICIAL_DIMS)
def test_expected_shapes_are_openai_whispers(name):
    """weights.expected_shapes, which every load checks against, lists openai-whisper's own tensors. It is written
    out because building the modules, even on torch's meta device, cost 0.93 s at a process's first load (Zen 5
    EPYC), against 0.1 ms; here the modules are built, on the meta device, for every official size."""
    from whisper.model import AudioEncoder, TextDecoder
    d = weights.OFFICIAL_DIMS[name]
    with torch.device("meta"):  # Whisper itself cannot be: its alignment heads are a sparse tensor
        parts = {"encoder": AudioEncoder(d.n_mels, d.n_audio_ctx, d.n_audio_state, d.n_audio_head, d.n_audio_layer),
                 "decoder": TextDecoder(d.n_vocab, d.n_text_ctx, d.n_text_state, d.n_text_head, d.n_text_layer)}
    want = {f"{part}.{k}": tuple(v.shape) for part, module in parts.items() for k, v in module.state_dict().items()}
    assert weights.expected_shapes(d) == want


def test_ct2_round_trip_is_exact(tmp_path):
    model = weights.random_model(SMALL, seed=3)
    sd = {k: v.numpy() for k, v in model.state_dict.items()}
    weights.write_ct2_model_bin(tmp_path / "model.bin", weights.whisper_to_ct2(sd, SMALL))
    (tmp_path / "config.json").write_text("{}")
    back = weights.load(str(tmp_path))
    assert back.dims == SMALL
    assert set(back.state_dict) == set(sd)
    for name, arr in sd.items():
        np.testing.assert_array_equal(back.state_dict[name].numpy(), arr, err_msg=name)


def test_float16_ct2_file_widens_to_float32(tmp_path):
    arrays = weights.whisper_to_ct2({k: v.numpy() for k, v in weights.random_model(SMALL).state_dict.items()}, SMALL)
    half = {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in arrays.items()}
    weights.write_ct2_model_bin(tmp_path / "model.bin", half)
    back = weights.load(str(tmp_path))
    w = back.state_dict["encoder.conv1.weight"]
    assert w.dtype == torch.float32
    np.testing.assert_array_equal(w.numpy(), arrays["encoder/conv1/weight"].astype(np.float16).astype(np.float32))


def test_checkpoint_round_trip(tmp_path):
    model = weights.random_model(SMALL, seed=1)
    torch.save({"dims": vars(SMALL), "model_state_dict": model.state_dict}, tmp_path / "m.pt")
    back = weights.load(str(tmp_path / "m.pt"))
    assert back.dims == SMALL
    assert_same_state_dict(back.state_dict, model.state_dict)


def assert_same_state_dict(got: dict, want: dict) -> None:
    """Every tensor, encoder and decoder, present and bit-identical (a hash of some keys can miss a loss)."""
    assert set(got) == set(want), f"missing {sorted(set(want) - set(got))}, extra {sorted(set(got) - set(want))}"
    for name, t in want.items():
        assert got[name].dtype == t.dtype and torch.equal(got[name], t), name


def test_state_dict_comparison_sees_a_decoder_change():
    a, b = weights.random_model(SMALL, seed=1), weights.random_model(SMALL, seed=1)
    assert_same_state_dict(a.state_dict, b.state_dict)
    b.state_dict["decoder.ln.bias"] = b.state_dict["decoder.ln.bias"] + 1e-6
    with pytest.raises(AssertionError, match="decoder.ln.bias"):
        assert_same_state_dict(a.state_dict, b.state_dict)


def test_random_weights_are_seeded():
    a, b, c = (weights.load(f"random:tiny:{s}") for s in (0, 0, 1))
    assert a.encoder_sha256 == b.encoder_sha256 != c.encoder_sha256
    assert a.dims == weights.OFFICIAL_DIMS["tiny"]


def _bundled_bytes() -> bytes:
    return (weights.bundled_path() / "model.bin").read_bytes()


@pytest.mark.parametrize("corrupt, message", [
    (lambda b: b[: len(b) // 2], "truncated or corrupt"),
    (lambda b: b[:40], "truncated or corrupt"),
    (lambda b: b"\x07" + b[1:], "unsupported CTranslate2 binary version 7"),
    (lambda b: b.replace(b"WhisperSpec", b"BertSpec\0\0\0", 1), "not 'WhisperSpec'"),
    (lambda b: b"", "truncated or corrupt"),
], ids=["half", "header-only", "version", "spec-name", "empty"])
def test_corrupt_model_bin_is_one_clear_line(tmp_path, corrupt, message):
    (tmp_path / "model.bin").write_bytes(corrupt(_bundled_bytes()))
    with pytest.raises(MaxWhisperError, match=message) as err:
        weights.load(str(tmp_path))
    assert "\n" not in str(err.value) and str(tmp_path) in str(err.value)


def test_missing_tensor_is_named(tmp_path):
    arrays = weights.whisper_to_ct2({k: v.numpy() for k, v in weights.random_model(SMALL).state_dict.items()}, SMALL)
    del arrays["encoder/conv2/bias"]
    weights.write_ct2_model_bin(tmp_path / "model.bin", arrays)
    with pytest.raises(MaxWhisperError, match="'encoder/conv2/bias' is missing"):
        weights.load(str(tmp_path))


def write_model(path, dims=SMALL, drop: str | None = None, nan: str | None = None) -> None:
    """SMALL's random weights as an openai-whisper .pt under `dims` (or, for a path without a suffix, a CTranslate2
    directory), less the tensor `drop`, with a NaN in the tensor `nan`."""
    sd = {k: v.clone() for k, v in weights.random_model(SMALL, seed=1).state_dict.items() if k != drop}
    if nan:
        sd[nan].view(-1)[0] = float("nan")
    if path.suffix == ".pt":
        torch.save({"dims": vars(dims), "model_state_dict": sd}, path)
    else:
        path.mkdir()
        weights.write_ct2_model_bin(path / "model.bin", weights.whisper_to_ct2({k: v.numpy() for k, v in sd.items()}, dims))


# models the table names as {tmp}/NAME, written into tmp_path for the cases that use them
BAD_MODELS = {"empty.pt": lambda p: p.write_bytes(b""), "text.pt": lambda p: p.write_bytes(b"not a torch file"),
              "partial.pt": lambda p: write_model(p, drop="decoder.ln.bias"),
              "vocab.pt": lambda p: write_model(p, dims=dataclasses.replace(SMALL, n_vocab=301)),
              "nan.pt": lambda p: write_model(p, nan="encoder.conv1.weight"),
              "nan-ct2": lambda p: write_model(p, nan="decoder.token_embedding.weight"),
              "tensor.pt": lambda p: torch.save(torch.zeros(3), p)}


@pytest.mark.parametrize("source, message", [
    ("tiny-xl", "unknown model source 'tiny-xl'"),
    ("random:huge", "unknown model size 'huge'"),
    ("random:tiny:x", "bad random source"),
    ("random:tiny:1:2", "bad random source 'random:tiny:1:2'"),
    (f"random:tiny:{2 ** 64}", r"bad random source .*SEED from 0 to 2\*\*64-1"),
    ("", "empty model source: use bundled"),
    ("/nonexistent/model.pt", "model file not found: /nonexistent/model.pt"),
    ("base.en", r"not in openai-whisper's cache \(looked for .*base\.en\.pt\)"),
    ("{tmp}/empty.pt", r"empty.pt: not a readable openai-whisper checkpoint \(EOFError\)"),
    ("{tmp}/tensor.pt", r"tensor.pt: not a readable openai-whisper checkpoint \(TypeError: it holds a Tensor, not a dict\)"),
    ("{tmp}/text.pt", r"\(UnpicklingError: Unsupported operand 110\): the file is corrupt or another format; pass"),
    ("{tmp}/partial.pt", "tensor 'decoder.ln.bias' is missing; the checkpoint is incomplete"),
    ("{tmp}/vocab.pt", r"'decoder.token_embedding.weight' has shape \(300, 64\), the dims need \(301, 64\); the "
                       "checkpoint is corrupt or its weights are for another model"),
    ("{tmp}/nan.pt", "nan.pt: tensor 'encoder.conv1.weight' holds NaN or Inf values; the checkpoint is corrupt"),
    ("{tmp}/nan-ct2", "model.bin: tensor 'decoder.token_embedding.weight' holds NaN or Inf values"),
])
def test_bad_sources_name_the_problem(source, message, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    source = source.format(tmp=tmp_path)
    for name, write in BAD_MODELS.items():
        if source == str(tmp_path / name):
            write(tmp_path / name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one line, and no library warning printed before it
        with pytest.raises(MaxWhisperError, match=message) as err:
            weights.load(source)
    assert "\n" not in str(err.value)


def test_empty_directory_and_bad_checkpoint(tmp_path):
    with pytest.raises(MaxWhisperError, match="no model.bin here"):
        weights.load(str(tmp_path))
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    with pytest.raises(MaxWhisperError, match="not a readable openai-whisper checkpoint"):
        weights.load(str(tmp_path / "bad.pt"))
