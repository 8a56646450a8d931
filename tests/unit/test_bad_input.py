"""Bad input gets one clear line naming the problem and the fix, from the encoder and the CLI."""
import shutil

import numpy as np
import pytest
import soundfile
import torch

from conftest import CLIPS, gpu_status
from maxwhisper import audio, cli, weights
from maxwhisper.errors import MaxWhisperError
from maxwhisper.pipelines import Pipeline, check_decoding
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


@pytest.fixture(scope="module")
def cpu_pipe(pipelines):
    return pipelines["cpu"]


@pytest.mark.parametrize("mel, message", [(None, "mel given as a NoneType: expected a numpy array"),
                                          (np.zeros(GOOD).tolist(), "mel given as a list")])
def test_non_arrays_are_rejected(max_encoder, mel, message):
    with pytest.raises(MaxWhisperError, match=message):
        max_encoder(mel)


def test_an_output_that_overflows_is_refused(max_encoder):
    """Finite input far outside a log-mel's range overflows inside the encoder: an error, never NaN features."""
    with pytest.raises(MaxWhisperError, match="overflowed to NaN or Inf: the mel reaches 1e.30.*audio.log_mel"):
        max_encoder(np.full(GOOD, 1e30, np.float32))


def test_float64_numpy_and_torch_inputs_are_converted_to_float32(max_encoder, clip_mels, cpu_pipe, monkeypatch):
    """Documented behaviour: any floating input is cast to float32 first, mels by the encoder and samples by
    Pipeline.transcribe (openai-whisper's log-mel failed on float64, and took a tensor for a path)."""
    mel = clip_mels[CLIPS[0].stem]
    base = max_encoder(mel)
    assert np.array_equal(max_encoder(mel.astype(np.float64)), base)
    assert np.array_equal(max_encoder(torch.from_numpy(mel)), base)
    seen = []
    monkeypatch.setattr("whisper.transcribe", lambda model, samples, **options: seen.append(samples) or {"text": ""})
    samples = np.linspace(-1, 1, 1600)
    for x in (samples, torch.from_numpy(samples)):
        cpu_pipe.transcribe(x)
    assert len(seen) == 2 and all(s.dtype == np.float32 and np.array_equal(s, samples.astype(np.float32)) for s in seen)


def test_a_pipeline_decodes_greedily_unless_told(cpu_pipe, monkeypatch):
    """Temperature 0 by default (greedy, no fallback), as the benchmarks compare the paths; an explicit one passes
    through (dropping the default failed this, 1 of 1: on the fixture clips greedy never falls back)."""
    seen = []
    monkeypatch.setattr("whisper.transcribe", lambda model, samples, **options: seen.append(options) or {"text": ""})
    cpu_pipe.transcribe(np.zeros(1600, np.float32))
    cpu_pipe.transcribe(np.zeros(1600, np.float32), temperature=(0.0, 0.4))
    assert [options["temperature"] for options in seen] == [0.0, (0.0, 0.4)]


@pytest.mark.parametrize("call, message", [
    (lambda pipe: audio.log_mel(np.zeros((16000, 2), np.float32)),
     r"audio array has shape \(16000, 2\): pass mono 16 kHz samples, e.g. x.mean\(axis=1\)"),
    (lambda pipe: pipe.transcribe(np.zeros((2, 16000), np.float32)), r"e.g. x.mean\(axis=0\)"),
    (lambda pipe: audio.log_mel(np.zeros(16000, np.float32), 81), r"n_mels 81: Whisper's mel filters have 80 bins"),
    (lambda pipe: pipe.transcribe(np.zeros(16000, np.int16)), r"dtype int16: pass float samples in \[-1, 1\], e.g. x / 32768"),
    (lambda pipe: pipe.transcribe([0.0] * 16000), "audio is a list: pass a path or a 1-D numpy array"),
    (lambda pipe: pipe.transcribe(np.full(16000, np.nan, np.float32)), "audio array holds NaN or Inf samples"),
    (lambda pipe: Pipeline("cpu", dtype="banana"), "--impl cpu takes --dtype float32, bfloat16 or float16, not 'banana'"),
    (lambda pipe: pipe.transcribe(np.zeros(16000, np.float32), task="translate"), "--model bundled is English-only"),
    # past the audio's end openai-whisper's window loop never ends (the clip's end is beyond its last seek)
    (lambda pipe: pipe.transcribe(np.zeros(16000, np.float32), clip_timestamps="0,5"), r"5 s lies outside the audio \(0 to 1 s\)"),
    (lambda pipe: pipe.transcribe(np.zeros(16000, np.float32), clip_timestamps="0,1.01"), "1.01 s lies outside the audio"),
    (lambda pipe: pipe.transcribe(np.zeros(16000, np.float32), clip_timestamps=[-1.0]), "-1 s lies outside the audio"),
    (lambda pipe: pipe.transcribe(np.zeros(16000, np.float32), clip_timestamps="0,nan"), "nan s lies outside the audio"),
], ids=["stereo", "channels-first", "n_mels", "int16", "list", "nan", "dtype", "translate", "clip-past-end", "clip-a-frame-past",
        "clip-negative", "clip-nan"])
def test_api_errors_are_one_line(cpu_pipe, call, message):
    with pytest.raises(MaxWhisperError, match=message) as err:
        call(cpu_pipe)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("options, languages, language", [
    ({"language": "German", "task": "translate"}, 99, "de"), ({"language": "DE"}, 99, "de"), ({"language": "English"}, 0, "en"),
    ({"language": "EN", "task": "transcribe"}, 0, "en"), ({"best_of": 3, "temperature": (0.0, 0.4)}, 0, None),
    ({"beam_size": 5, "patience": 2.0, "length_penalty": 1.0}, 0, None), ({"best_of": 2, "temperature": 0.5}, None, None),
    ({"beam_size": 5, "patience": 2.0, "temperature": (0.0, 0.2)}, None, None)])
def test_decoding_options_openai_whisper_takes_pass(options, languages, language):
    """They pass, a language by name or in capitals becoming the code every path takes (faster-whisper takes codes only)."""
    check_decoding(options, languages, "m", "another model")
    assert options.get("language") == language


def test_a_language_the_model_does_not_know_is_refused():
    """Cantonese came with large-v3's 100 languages; a 99-language model's tokenizer would fail on it mid-transcription."""
    with pytest.raises(MaxWhisperError, match="--model tiny knows 99 languages and not this one"):
        check_decoding({"language": "Cantonese"}, 99, "tiny", "another model")


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write_wav(path, cut: bool = False, nan: bool = False) -> None:
    samples = np.zeros(1600, np.float32)
    samples[5] = np.nan if nan else 0.0
    soundfile.write(path, samples, 16000, subtype="FLOAT" if nan else "PCM_16")
    if cut:  # the header still promises every frame
        path.write_bytes(path.read_bytes()[:1000])


def write_ct2_dir(path, cut: bool = False) -> None:
    path.mkdir()
    model = weights.bundled_path()
    if cut:  # the first MB of model.bin, with config.json
        with open(model / "model.bin", "rb") as f:
            (path / "model.bin").write_bytes(f.read(1 << 20))
        shutil.copy(model / "config.json", path)
    else:  # model.bin without config.json
        (path / "model.bin").symlink_to(model / "model.bin")


# inputs the table names as {tmp}/NAME, written into tmp_path for the cases that use them
BAD_FILES = {"adir.wav": lambda p: p.mkdir(), "nan.wav": lambda p: write_wav(p, nan=True),
             "cut.wav": lambda p: write_wav(p, cut=True), "ct2-noconfig": write_ct2_dir,
             "ct2-cut": lambda p: write_ct2_dir(p, cut=True)}


@pytest.mark.parametrize("argv, message", [
    (["transcribe", "nope.wav"], "audio file not found: nope.wav"),
    (["transcribe", "{tmp}/adir.wav"], "{tmp}/adir.wav is a directory, not an audio file"),
    (["transcribe", "{tmp}/nan.wav", "--impl", "cpu"], "{tmp}/nan.wav: holds NaN or Inf samples"),
    (["encode", "{tmp}/nan.wav", "--out", "{tmp}/f.npy"], "{tmp}/nan.wav: holds NaN or Inf samples"),
    (["transcribe", "{tmp}/cut.wav"], "{tmp}/cut.wav: truncated WAV: its header promises 3200 bytes"),
    (["transcribe", str(CLIPS[0]), "--impl", "faster-whisper", "--model", "{tmp}/ct2-noconfig"],
     "{tmp}/ct2-noconfig: no config.json here"),
    (["transcribe", str(CLIPS[0]), "--impl", "faster-whisper", "--model", "{tmp}/ct2-cut"],
     "{tmp}/ct2-cut: faster-whisper could not load this model (RuntimeError: "),
    (["transcribe", str(CLIPS[0]), "--impl", "cpu", "--dtype", "int8"], "--impl cpu takes --dtype float32, bfloat16"),
    (["encode", str(CLIPS[0]), "--impl", "torch", "--dtype", "int8", "--out", "{tmp}/f.npy"],
     "--dtype int8 is for transcribe --impl faster-whisper"),
    (["transcribe", str(CLIPS[0]), "--impl", "cpu", "--device", "gpu"], "--impl cpu runs on the CPU only"),
    (["transcribe", str(CLIPS[0]), "--impl", "gpu", "--dtype", "bfloat16"], "--impl gpu runs openai-whisper's own fp16 path"),
    (["transcribe", str(CLIPS[0]), "--impl", "faster-whisper", "--device", "gpu"], "faster-whisper runs on the CPU only"),
    (["encode", str(CLIPS[0]), "--out", "/nonexistent/dir/f.npy"], "--out /nonexistent/dir/f.npy: /nonexistent/dir is not a directory"),
    (["encode", str(CLIPS[0]), "--out", "{tmp}"], "--out {tmp} is a directory; name the file"),
    (["encode", str(CLIPS[0]), "--out", "{tmp}/noext"], "name the file {tmp}/noext.npy"),
    (["encode", str(CLIPS[0]), "--model", "tiny-xl", "--out", "x.npy"], "unknown model source 'tiny-xl'"),
    (["encode", str(CLIPS[0]), "--model", "/no/such/model.pt", "--out", "x.npy"], "model file not found"),
    (["transcribe", str(CLIPS[0]), "--impl", "gpu"], "needs a CUDA GPU for PyTorch and none is visible; use --impl cpu"),
    (["encode", str(CLIPS[0]), "--impl", "torch", "--device", "gpu", "--out", "x.npy"], "needs a CUDA GPU"),
    (["transcribe", str(CLIPS[0]), "--impl", "max-encoder", "--device", "gpu"], "needs a CUDA GPU for PyTorch"),
    # the max path needs only MAX to see a GPU: openai-whisper's loop stays on the CPU
    (["transcribe", str(CLIPS[0]), "--impl", "max", "--device", "gpu"], "MAX sees no accelerator"),
    (["transcribe", str(CLIPS[0]), "--impl", "max", "--device", "gpu", "--warps"], "MAX sees no accelerator"),
    (["transcribe", str(CLIPS[0]), "--impl", "cpu", "--warps"], "--impl cpu has none; use --impl max"),
    (["transcribe", str(CLIPS[0]), "--impl", "gpu", "--graph-ops"], "--impl gpu has none; use --impl max"),
    # decoding options openai-whisper would ignore on an English-only model, or refuse from inside a window's task
    (["transcribe", str(CLIPS[0]), "--impl", "cpu", "--language", "xx"], "unknown language 'xx'; give a code such as en"),
    (["transcribe", str(CLIPS[0]), "--impl", "cpu", "--language", "German"], "--model bundled is English-only"),
    (["transcribe", str(CLIPS[0]), "--impl", "faster-whisper", "--task", "translate"],
     "--task translate: --model bundled is English-only and cannot translate"),
    (["transcribe", str(CLIPS[0]), "--impl", "max", "--task", "summarize"], "unknown task 'summarize'"),
    (["transcribe", str(CLIPS[0]), "--impl", "cpu", "--patience", "2"], "--patience applies to beam search"),
    (["transcribe", str(CLIPS[0]), "--impl", "cpu", "--beam-size", "0"], "--beam-size 0: give 1 or more"),
    (["transcribe", str(CLIPS[0]), "--impl", "cpu", "--temperature", "-1"], "give one or more temperatures >= 0"),
    (["transcribe", str(CLIPS[0]), "--impl", "cpu", "--temperature-increment-on-fallback", "0"], "give a step > 0"),
    (["transcribe", str(CLIPS[0]), "--impl", "cpu", "--temperature", "1.5", "--temperature-increment-on-fallback", "0.2"],
     "--temperature 1.5 with --temperature-increment-on-fallback: the fallback rises from it to 1.0"),
    # flags openai-whisper drops at the temperatures given
    (["transcribe", str(CLIPS[0]), "--impl", "cpu", "--best-of", "3"], "--best-of picks among samples at a temperature above 0"),
    (["transcribe", str(CLIPS[0]), "--impl", "cpu", "--beam-size", "5", "--temperature", "0.5"],
     "--beam-size applies to beam search at temperature 0"),
    # refused once the model is loaded, before any graph compiles: a compile would print its line first
    (["transcribe", str(CLIPS[0]), "--impl", "max", "--language", "de"], "--model bundled is English-only"),
])
def test_cli_errors_are_one_line(capsys, tmp_path, argv, message):
    status = gpu_status()
    if ("CUDA GPU" in message or "accelerator" in message) and (status.max_gpu if "max" in argv else status.torch_cuda):
        pytest.skip("a GPU is present, so the GPU path is valid here")
    argv, message = [a.format(tmp=tmp_path) for a in argv], message.format(tmp=tmp_path)
    for name, write in BAD_FILES.items():
        if any(str(tmp_path / name) in a for a in argv):
            write(tmp_path / name)
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert err.startswith("maxwhisper: error: ") and err.count("\n") == 1 and message in err, err


def test_cli_decoding_options_reach_transcribe(capsys, monkeypatch):
    """Each decoding flag becomes openai-whisper's transcribe() option; flags not given stay unset, so its defaults
    hold (but greedy at temperature 0 unless told), and the fallback steps as openai-whisper's CLI builds them."""
    seen = []
    monkeypatch.setattr("whisper.transcribe", lambda model, samples, **options: seen.append(options) or {"text": ""})
    code, _, err = run_cli(capsys, "transcribe", str(CLIPS[0]), "--impl", "cpu")
    assert code == 0, err
    code, _, err = run_cli(capsys, "transcribe", str(CLIPS[0]), "--impl", "cpu", "--language", "English", "--beam-size",
                           "3", "--patience", "1.5", "--best-of", "2", "--initial-prompt", "Numbers.",
                           "--temperature-increment-on-fallback", "0.25", "--no-condition-on-previous-text")
    assert code == 0, err
    fixed = {"word_timestamps", "verbose", "fp16"}
    assert [{k: v for k, v in o.items() if k not in fixed} for o in seen] == [
        {"temperature": 0.0},
        {"language": "en", "beam_size": 3, "patience": 1.5, "best_of": 2, "initial_prompt": "Numbers.",
         "temperature": (0.0, 0.25, 0.5, 0.75, 1.0), "condition_on_previous_text": False}]


def test_faster_whisper_takes_openai_whisper_option_names(monkeypatch):
    """faster-whisper gets openai-whisper's options under its own names and greedy defaults (its own are beam 5 and
    best of 5), and the result reports the language it decoded in."""
    pipe, seen = Pipeline("faster-whisper"), []
    transcribe = pipe.fw.transcribe
    monkeypatch.setattr(pipe.fw, "transcribe", lambda samples, **options: seen.append(options) or transcribe(samples, **options))
    result = pipe.transcribe(str(CLIPS[0]), logprob_threshold=-0.5, suppress_tokens="-1,220", initial_prompt="Hello.",
                             language="English")
    assert {k: seen[0][k] for k in ("beam_size", "best_of", "log_prob_threshold", "suppress_tokens", "temperature",
                                    "language")} == {
        "beam_size": 1, "best_of": 1, "log_prob_threshold": -0.5, "suppress_tokens": [-1, 220], "temperature": 0.0,
        "language": "en"}
    assert "logprob_threshold" not in seen[0] and result["language"] == "en" and result["text"].strip()


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
