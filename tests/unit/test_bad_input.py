"""Bad input gets one clear line naming the problem and the fix, from the encoder and the CLI."""
import numpy as np
import pytest
import torch

from conftest import CLIPS, gpu_status
from maxwhisper import cli
from maxwhisper.errors import MaxWhisperError
from tests.helpers import assert_parity

pytestmark = pytest.mark.unit
GOOD = (1, 80, 3000)


@pytest.mark.parametrize("shape, message", [
    ((80, 3000), r"expected \(batch, 80, 3000\) \(add a batch axis"),
    ((1, 3000, 80), "looks transposed"),
    ((1, 128, 3000), "this model takes 80 mel bins"),
    ((1, 80, 1500), "pad or trim to 30 s"),
    ((0, 80, 3000), r"shape \(0, 80, 3000\)"),
    ((1, 1, 80, 3000), r"shape \(1, 1, 80, 3000\)"),
])
def test_wrong_shape_is_rejected_before_running(max_encoder, shape, message):
    with pytest.raises(MaxWhisperError, match=message):
        max_encoder(np.zeros(shape, np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_rejected(max_encoder, bad):
    mel = np.zeros(GOOD, np.float32)
    mel[0, 3, 7] = bad
    with pytest.raises(MaxWhisperError, match="NaN or Inf"):
        max_encoder(mel)


@pytest.mark.parametrize("array", [np.zeros(GOOD, np.int32), torch.zeros(GOOD, dtype=torch.int64), np.zeros(GOOD, bool)])
def test_non_float_dtypes_are_rejected(max_encoder, array):
    with pytest.raises(MaxWhisperError, match="expected a floating-point log-mel"):
        max_encoder(array)


def test_float64_numpy_and_torch_inputs_are_converted_to_float32(max_encoder, clip_mels):
    """Documented behaviour: any floating input is cast to float32 first."""
    mel = clip_mels[CLIPS[0].stem]
    base = max_encoder(mel)
    assert np.array_equal(max_encoder(mel.astype(np.float64)), base)
    assert np.array_equal(max_encoder(torch.from_numpy(mel)), base)


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv, message", [
    (["transcribe", "nope.wav"], "audio file not found: nope.wav"),
    (["encode", str(CLIPS[0]), "--model", "tiny-xl", "--out", "x.npy"], "unknown model source 'tiny-xl'"),
    (["encode", str(CLIPS[0]), "--model", "/no/such/model.pt", "--out", "x.npy"], "model file not found"),
    (["transcribe", str(CLIPS[0]), "--impl", "gpu"], "needs a CUDA GPU"),
    (["encode", str(CLIPS[0]), "--impl", "torch", "--device", "gpu", "--out", "x.npy"], "needs a CUDA GPU"),
    (["transcribe", str(CLIPS[0]), "--impl", "max-encoder", "--device", "gpu"], "needs a CUDA GPU for PyTorch"),
    # the max path needs only MAX to see a GPU: openai-whisper's loop stays on the CPU
    (["transcribe", str(CLIPS[0]), "--impl", "max", "--device", "gpu"], "MAX sees no accelerator"),
    (["transcribe", str(CLIPS[0]), "--impl", "max", "--device", "gpu", "--warps"], "MAX sees no accelerator"),
    (["transcribe", str(CLIPS[0]), "--impl", "cpu", "--warps"], "--impl cpu has none; use --impl max"),
    (["transcribe", str(CLIPS[0]), "--impl", "gpu", "--graph-ops"], "--impl gpu has none; use --impl max"),
])
def test_cli_errors_are_one_line(capsys, argv, message):
    status = gpu_status()
    if "gpu" in argv and (status.max_gpu if "max" in argv else status.torch_cuda):
        pytest.skip("a GPU is present, so the GPU path is valid here")
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert err.startswith("maxwhisper: error: ") and err.count("\n") == 1 and message in err, err


def test_cli_corrupt_model_dir(capsys, tmp_path):
    (tmp_path / "model.bin").write_bytes(b"\x06\x00\x00\x00garbage")
    code, _, err = run_cli(capsys, "encode", str(CLIPS[0]), "--model", str(tmp_path), "--out", str(tmp_path / "f.npy"))
    assert code == 2 and "corrupt" in err and err.count("\n") == 1


def test_cli_non_wav_without_ffmpeg_says_install_ffmpeg(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    (tmp_path / "a.mp3").write_bytes(b"ID3")
    code, _, err = run_cli(capsys, "transcribe", str(tmp_path / "a.mp3"))
    assert code == 2 and "install ffmpeg" in err


def test_cli_encode_max_and_torch_agree(capsys, tmp_path, max_encoder):
    """`encode --impl max` and `--impl torch` on a speech file: features within the encoder's float32 parity
    tolerance (measured on this clip, Zen 5 EPYC: max|diff| 6.4e-5 = 5.1e-6 of max|ref|; limit 4e-4)."""
    for impl in ("max", "torch"):
        code, _, err = run_cli(capsys, "encode", str(CLIPS[-1]), "--impl", impl, "--out", str(tmp_path / f"{impl}.npy"))
        assert code == 0, err
    a, b = np.load(tmp_path / "max.npy"), np.load(tmp_path / "torch.npy")
    assert a.shape == b.shape == (1, 1500, 384) and a.dtype == np.float32
    assert_parity({"ln_post": a}, {"ln_post": b})


def test_attention_kernel_only_where_heads_are_64_wide_on_cpu():
    """The encoder's attention kernel reads heads of 64 (every official size): other widths take the graph's
    attention by default, and asking for the kernel there (or on GPU) is one clear error, not a wrong answer."""
    from whisper.model import ModelDimensions
    from maxwhisper.encoder import EncoderConfig
    tiny = ModelDimensions(80, 1500, 384, 6, 4, 51864, 448, 384, 6, 4)
    wide_heads = ModelDimensions(80, 1500, 384, 4, 4, 51864, 448, 384, 6, 4)  # heads 96 wide
    assert EncoderConfig(tiny).attention_kernel and not EncoderConfig(tiny, device="gpu").attention_kernel
    assert not EncoderConfig(wide_heads).attention_kernel
    for cfg in ({"dims": wide_heads}, {"dims": tiny, "device": "gpu"}):
        with pytest.raises(MaxWhisperError, match="heads 64 wide, on CPU"):
            EncoderConfig(**cfg, attention_kernel=True)
