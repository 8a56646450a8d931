"""The MAX encoder and decoder on GPU against PyTorch float32 on the CPU (skipped, saying what to install,
without a GPU).

MAX-only: these need MAX to see a GPU, not a CUDA torch; the reference is PyTorch on the CPU, so they run
on a GPU box whose torch is a CPU build. Every stage is compared (the GPU graph's taps), so a mismatch is
pinned to the stage it starts in; the decoder's GPU taps are the `gpu` cases of test_decoder_parity.py.
MAX's GPU float32 products round like TF32 (an H200, MAX 26.7, 2026-11-26: relative error ~1e-3, encoder
block3 NMSE 9.6e-6, decoder logits max |diff| 0.03), so the GPU float32 graphs multiply parts that TF32
holds exactly (maxwhisper/exact.py). What remains is the GPU's own float32 arithmetic, NMSE ~1e-10: the
GPU tables of maxwhisper/metrics.py (`on_device`) hold those measurements, and the tokens must be exact.
Every window is compared before a test fails, so one run on a borrowed GPU measures them all.
"""
import numpy as np
import pytest

from maxwhisper.metrics import on_device
from tests.helpers import as_taps, assert_parity_each, item, segment_tokens as tokens

pytestmark = [pytest.mark.parity, pytest.mark.gpu]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_gpu_taps_match_pytorch_at_every_stage(dtype, bundled, speech_windows, speech_reference):
    from maxwhisper.encoder import get_encoder
    names, mels = speech_windows
    taps = as_taps(get_encoder(bundled, "gpu", dtype).run(mels))
    cases = ((f"gpu {dtype} {name}", item(taps, i), item(speech_reference, i)) for i, name in enumerate(names))
    assert_parity_each(cases, on_device(dtype, "gpu"))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_gpu_production_graph_matches_pytorch(dtype, bundled, speech_windows, speech_reference):
    from maxwhisper.encoder import get_encoder
    names, mels = speech_windows
    out = get_encoder(bundled, "gpu", dtype)(mels)
    cases = ((f"gpu {dtype} {name}", {"ln_post": out[i]}, {"ln_post": speech_reference["ln_post"][i]})
             for i, name in enumerate(names))
    assert_parity_each(cases, on_device(dtype, "gpu"))


@pytest.fixture(scope="module")
def cpu_tokens(cpu_transcript):
    """openai-whisper float32 on the CPU, greedy, each clip's tokens per segment, with the options the GPU
    paths below use (conftest's cpu_transcript: no word timestamps)."""
    from conftest import CLIP_NAMES
    return {clip: tokens(cpu_transcript(clip)) for clip in CLIP_NAMES}


def test_gpu_encoder_gives_the_reference_tokens(bundled, cpu_tokens):
    """whisper.transcribe with the MAX GPU encoder and PyTorch's CPU decoder: PyTorch's CPU tokens."""
    import whisper

    from conftest import CLIPS
    from maxwhisper import audio
    from maxwhisper.encoder import MaxAudioEncoder, get_encoder
    model = bundled.whisper_model("cpu")
    model.encoder = MaxAudioEncoder(get_encoder(bundled, "gpu", "float32"))
    for clip in CLIPS:
        result = whisper.transcribe(model, audio.load_audio(clip), temperature=0.0, fp16=False)
        assert tokens(result) == cpu_tokens[clip.stem], clip.stem


@pytest.mark.torch_cuda
def test_gpu_pytorch_path_transcribes(expected_transcripts):
    """openai-whisper fp16 on CUDA: same words as the CPU reference within fp16 noise. The bound allows one
    word in ten to move; on an H100 (2026-11-27) the long clip's fp16 text equalled the CPU's float32 text."""
    from conftest import CLIPS
    from maxwhisper.metrics import word_error_rate
    from maxwhisper.pipelines import Pipeline
    pipe = Pipeline("gpu", "bundled")
    for clip in CLIPS:
        assert word_error_rate(expected_transcripts[clip.stem]["text"], pipe.transcribe(clip)["text"]) < 0.1


@pytest.mark.parametrize("warps", [False, True], ids=["graph", "warps"])
@pytest.mark.parametrize("capture", [False, True], ids=["eager", "captured"])
def test_gpu_max_path_gives_the_reference_tokens(capture, warps, cpu_tokens):
    """The max path with encoder and decoder on GPU (openai-whisper's loop on the CPU: MAX alone needs the
    GPU), the step as graph ops or as the warp kernels, run eagerly or replayed from a captured device graph:
    openai-whisper's float32 CPU tokens on every clip."""
    from conftest import CLIPS
    from maxwhisper.pipelines import Pipeline
    pipe = Pipeline("max", "bundled", device="gpu", capture=capture, warps=warps)
    for clip in CLIPS:
        assert tokens(pipe.transcribe(clip)) == cpu_tokens[clip.stem], clip.stem


@pytest.mark.parametrize("kernel, wait", [("gpu", "sync"), ("gpu-warps", "sync"), ("gpu-warps", "spin")])
def test_gpu_captured_steps_replay_the_eager_steps(kernel, wait, bundled, clip_features, expected_transcripts,
                                                   monkeypatch):
    """Single-token steps on GPU replaying a captured device graph (opt-in: MAXWHISPER_CAPTURE=1) give the
    same logits as running the graph's ops (or the warp kernels) step by step, and the capture really ran
    (no silent fallback); also when a replay waits for its logits by polling an event (MAXWHISPER_STEP_WAIT=spin),
    which must not read them before their copy is done."""
    from tests.helpers import decoder_named
    monkeypatch.setenv("MAXWHISPER_STEP_WAIT", wait)
    decoder = decoder_named(bundled, kernel)
    tokens = np.concatenate(expected_transcripts["long"]["tokens"])[None, :24]
    runs = []
    for capture in (True, False):
        state = decoder.new_state(clip_features["short"])
        state.capture = capture
        steps = [state.step(tokens[:, :3])[:, -1]] + [state.step(tokens[:, i:i + 1])[:, -1] for i in range(3, 24)]
        assert (state._captured is not None) == capture, decoder.capture_error
        runs.append(np.concatenate(steps))
    np.testing.assert_array_equal(runs[0], runs[1])


@pytest.mark.parametrize("setting", [{"MAXWHISPER_WARPS_PDL": "0"}, {"MAXWHISPER_WARPS_PREFETCH": "0"},
                                     {"MAXWHISPER_WARPS_PREFETCH": "2"}, {"MAXWHISPER_WARPS_PREFETCH": "3"},
                                     {"MAXWHISPER_WARPS_BLOCK": "32"}, {"MAXWHISPER_WARPS_BLOCK": "128"}],
                         ids=lambda s: "-".join(f"{k.split('_')[-1].lower()}{v}" for k, v in s.items()))
def test_gpu_warps_launch_settings_change_no_logit(setting, bundled, clip_features, expected_transcripts,
                                                   monkeypatch):
    """The warp kernels' launch settings move only time: 24 eager steps' logits (a 3-token prefill of real
    tokens, then 21 single steps) are the same bits under each as under the defaults (64 threads a block, L2
    prefetch, dependent launches). `pdl0` compares the dependent launches against plain ones, where each stage
    starts only once the one before has finished: a kernel that read the stage before it ahead of its wait
    could read stale values with them, and such a race, timing-dependent, shows here only when it strikes.
    The other settings keep the dependent launches on both sides."""
    from tests.helpers import decoder_named
    decoder = decoder_named(bundled, "gpu-warps")
    tokens = np.concatenate(expected_transcripts["long"]["tokens"])[None, :24]

    def decode() -> np.ndarray:
        state = decoder.new_state(clip_features["short"])
        return np.concatenate([state.step(tokens[:, :3])[:, -1]]
                              + [state.step(tokens[:, i:i + 1])[:, -1] for i in range(3, 24)])
    default = decode()
    for name, value in setting.items():
        monkeypatch.setenv(name, value)
    np.testing.assert_array_equal(decode(), default)
