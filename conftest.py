"""Shared test machinery: Hypothesis profiles, GPU detection and skips, session-scoped models and fixtures.

Compiled MAX models are session-scoped: each graph compiles once per test run (about 100 s cold on
2 cores, about 2 s from ~/.cache/modular), never per test or per Hypothesis example.
"""
from __future__ import annotations

import functools
import gc
import json
import os
import pathlib
import re
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

ROOT = pathlib.Path(__file__).resolve().parent
FIXTURES = ROOT / "fixtures"
CLIPS = sorted((FIXTURES / "audio").glob("*.wav"))
CLIP_NAMES = [c.stem for c in CLIPS]
CLIP_PATHS = {c.stem: c for c in CLIPS}  # each fixture clip by name
SHORT_CLIP = min(CLIPS, key=lambda p: p.stat().st_size)  # by file size: the shortest and longest audio
LONG_CLIP = max(CLIPS, key=lambda p: p.stat().st_size)
SAMPLES = FIXTURES / "bench_samples"  # synthetic benchmark runs (fixtures/make_bench_samples.py)

# derandomize=False is explicit: with CI set, Hypothesis loads its own derandomized "ci" profile at import,
# and a profile registered afterwards inherits it (the header then read "seed: None" on CI).
settings.register_profile("dev", deadline=None, max_examples=25, derandomize=False,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
# CI explores too: not derandomized, but one seed per run, drawn fresh and printed in the header, so a
# failure found on CI replays with `--hypothesis-seed=N` (print_blob also prints the failing example).
settings.register_profile("ci", parent=settings.get_profile("dev"), max_examples=30, print_blob=True)
settings.load_profile(os.getenv("HYPOTHESIS_PROFILE", "ci" if os.getenv("CI") else "dev"))


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    config.addinivalue_line("markers", "torch_cuda: compares against PyTorch on CUDA (skipped, saying what to "
                                       "install, where torch is a CPU build)")
    if config.getoption("hypothesis_seed", None) is None and settings.default.derandomize is False:
        config.option.hypothesis_seed = int.from_bytes(os.urandom(4), "little")
    use_project_machine_id()


def pytest_report_header(config):
    return f"hypothesis seed for this run: {config.getoption('hypothesis_seed', None)} (replay: --hypothesis-seed=N)"


def use_project_machine_id() -> None:
    """Store and compare benchmark runs under the hardware machine id (tests/bench/conftest.py).

    pytest-benchmark picks its storage folder and loads `--benchmark-compare` inside its own
    pytest_configure, so the id must be in place before that hook runs: renaming the folder later
    saved runs where `--benchmark-compare` never looked."""
    try:
        import pytest_benchmark.session as bench_session
    except ImportError:  # the plugin is not installed: nothing to store
        return
    from tests.bench.conftest import machine_id
    bench_session.get_machine_id = machine_id


@dataclass(frozen=True)
class GpuStatus:
    visible: bool  # the machine shows a GPU to this process (NVML, or an AMD /dev/kfd)
    max_gpu: bool  # MAX sees an accelerator
    torch_cuda: bool  # torch is a CUDA build and sees a GPU
    max_error: str = ""  # why MAX's accelerator query failed, where it raised


@functools.cache
def gpu_status() -> GpuStatus:
    import torch

    from maxwhisper.memory import nvml_handle
    max_error = ""
    try:
        from max.driver import accelerator_count
        max_gpu = accelerator_count() > 0
    except Exception as exc:  # a broken driver install skips on a CPU box; a GPU run names it (gpu_run_problem)
        max_gpu, max_error = False, f"{type(exc).__name__}: {str(exc).strip()[:200]}"
    visible = nvml_handle() is not None or (os.path.exists("/dev/kfd") and os.getenv("CUDA_VISIBLE_DEVICES") != "")
    return GpuStatus(visible or max_gpu, max_gpu, torch.cuda.is_available(), max_error)


INSTALL_MAX = ("MAX sees no accelerator: install max==26.7.0 on a supported GPU with its driver (NVIDIA: a "
               "CUDA 12 driver, `nvidia-smi` works); `make gpu` sets up such a box")
INSTALL_TORCH = ("torch is a CPU build (torch.cuda.is_available() is False): install a CUDA build of torch, "
                 "or keep the machine's own with `make gpu` (a venv over the system site-packages)")


def gpu_skip_reason(markers: set[str], status: GpuStatus) -> str | None:
    """Why a test with these markers cannot run here, or None.

    `gpu` tests need MAX to see a GPU; they compare against PyTorch on the CPU where torch has no CUDA.
    `torch_cuda` tests run PyTorch itself on the GPU and need only torch's CUDA."""
    if "torch_cuda" in markers:
        return None if status.torch_cuda else f"no CUDA in torch: {INSTALL_TORCH}"
    if "gpu" in markers and not status.max_gpu:
        return f"no GPU for MAX: {INSTALL_MAX}" + (f" (MAX raised {status.max_error})" if status.max_error else "")
    return None


def gpu_run_problem(status: GpuStatus, reasons: list[str | None], markexpr: str) -> str | None:
    """The error for a GPU run (`-m gpu`) on a machine with a GPU where every gpu test would skip, or where MAX
    cannot see the GPU: its tests are the ones a GPU run is for, so they may not skip there in silence."""
    if not status.visible or not re.search(r"(?<!not )\bgpu\b", markexpr) or not reasons:
        return None
    max_skipped = sum(bool(r and r.startswith("no GPU for MAX")) for r in reasons)
    if max_skipped and not all(reasons):
        return (f"a GPU is visible but MAX cannot use it, so its {max_skipped} gpu tests would skip: {INSTALL_MAX}"
                + (f" (MAX raised {status.max_error})" if status.max_error else ""))
    if not all(reasons):
        return None
    missing = [m for m, lacking in ((INSTALL_MAX, not status.max_gpu), (INSTALL_TORCH, not status.torch_cuda)) if lacking]
    return (f"a GPU is visible but all {len(reasons)} gpu tests would skip, so this run would prove nothing. "
            + " Also: ".join(missing))


def wants_slow(markexpr: str) -> bool:
    """Whether a `-m` expression asks for `slow` cases (`slow`, `parity and slow`, `slow or not slow`): any other
    run leaves them out, so `pytest -m parity` or `pytest -m gpu` runs what plain `pytest` runs of those tests,
    not every official size (pytest's `-m` replaces the one in addopts, it does not add to it)."""
    return re.search(r"(?<!not )\bslow\b", markexpr) is not None


@pytest.hookimpl(trylast=True)  # after `-m` deselected what the run does not ask for
def pytest_collection_modifyitems(config, items):
    if not wants_slow(config.getoption("markexpr") or ""):
        keep, slow = [], []
        for item in items:
            (slow if any(m.name == "slow" for m in item.iter_markers()) else keep).append(item)
        if slow:
            config.hook.pytest_deselected(items=slow)
            items[:] = keep
    status = gpu_status()
    reasons = []
    for item in items:
        markers = {m.name for m in item.iter_markers()}
        if markers & {"gpu", "torch_cuda"}:
            reasons.append(gpu_skip_reason(markers, status))
            if reasons[-1]:
                item.add_marker(pytest.mark.skip(reason=reasons[-1]))
    problem = gpu_run_problem(status, reasons, config.getoption("markexpr") or "")
    if problem:
        raise pytest.UsageError(problem)


# --- session-scoped models --------------------------------------------------------------------

@pytest.fixture(scope="session")
def bundled():
    from maxwhisper import weights
    return weights.load("bundled")


@pytest.fixture(scope="session")
def torch_model(bundled):
    return bundled.whisper_model("cpu").eval()


@pytest.fixture(scope="session")
def max_encoder(bundled):
    """tiny.en, CPU, float32: the graph users run, every stage's activations among its outputs (`run`)."""
    from maxwhisper.encoder import get_encoder
    return get_encoder(bundled, "cpu", "float32")


@pytest.fixture(scope="session")
def max_encoder_random_tiny():
    """Seeded random weights with tiny's dims: the same compiled graph as tiny.en, other weights."""
    from maxwhisper import weights
    from maxwhisper.encoder import get_encoder
    from maxwhisper.golden import SEED
    return get_encoder(weights.load(f"random:tiny:{SEED}"), "cpu", "float32")


@pytest.fixture(scope="session")
def max_bf16_encoder(bundled):
    from maxwhisper.encoder import get_encoder
    return get_encoder(bundled, "cpu", "bfloat16")


@pytest.fixture
def released():
    """`released(loaded)`: when the test ends, passed or failed, the process drops its compiled encoders and
    decoders of those weights. Kept for the process's life, every official size's (the slow cases) took
    `pytest -m slow` past this machine's 24 GB, and the kernel killed it at large-v3's warp decoder."""
    from maxwhisper import decoder, encoder
    held = []
    yield held.append
    for loaded in held:
        encoder.release(loaded.encoder_sha256)
        decoder.release(loaded.decoder_sha256)
    gc.collect()


@pytest.fixture(scope="session")
def kernel_probe():
    """One compiled graph for the custom Mojo ops' unit tests, every dimension symbolic (a graph's fixed cold
    compile, about 25 s here, paid once: two graphs took 30 s each). Call it with max.driver Buffers:
        x (m, k), w and w_half packed by gemv.panels, a vector of length n, qkv (batch, time, 3 * 384)
        -> gemv_nt(x, w, n), gemv_nt(x, w_half, n), the same with the pairs micro kernel forced off and on,
           the encoder's attention of qkv (6 heads)
    A test of one op feeds the other op the smallest inputs (tests/helpers.py: `kernel_probe_run`)."""
    from max.dtype import DType
    from max.graph import DeviceRef, Graph, TensorType
    from maxwhisper.encoder import kernel_attention
    from maxwhisper.session import get_session
    from maxwhisper.gemv import KERNELS_PATH, gemv_nt
    from tests.helpers import ATTENTION_HEADS, ATTENTION_WIDTH
    cpu = DeviceRef.CPU()
    types = [TensorType(DType.float32, ["m", "k"], cpu), TensorType(DType.float32, ["packed"], cpu),
             TensorType(DType.float16, ["packed"], cpu), TensorType(DType.float32, ["n"], cpu),
             TensorType(DType.float32, ["batch", "time", 3 * ATTENTION_WIDTH], cpu)]
    with Graph("kernel_probe", input_types=types, custom_extensions=[KERNELS_PATH]) as graph:
        x, w, w_half, n, qkv = (v.tensor for v in graph.inputs)
        graph.output(gemv_nt(x, w, n.shape[0]), gemv_nt(x, w_half, n.shape[0]),
                     gemv_nt(x, w, n.shape[0], pairs=False), gemv_nt(x, w, n.shape[0], pairs=True),
                     kernel_attention(qkv, ATTENTION_HEADS))
    return get_session("cpu").load(graph)


@pytest.fixture(scope="session")
def pipelines():
    """The cpu and max transcription paths on the bundled model, by name."""
    from maxwhisper.pipelines import Pipeline
    return {impl: Pipeline(impl, "bundled") for impl in ("cpu", "max")}


@pytest.fixture(scope="session")
def transcribe(pipelines):
    """transcribe(impl, clip, options=()) -> openai-whisper's result with word timestamps, computed once per
    session per arguments and shared by every end-to-end test; torch's RNG is seeded first, so sampled
    fallbacks draw the same numbers on every path. `options` is a tuple of transcribe() keyword items."""
    from maxwhisper.pipelines import Pipeline
    from tests.helpers import transcribe_clip
    paths = dict(pipelines)

    @functools.cache
    def cached(impl: str, clip: str, options: tuple) -> dict:
        if impl == "max-warps":  # the MAX path with the warp kernels' decoder (on CPU their emulation)
            paths[impl] = Pipeline("max", "bundled", warps=True)
        elif impl == "max-encoder":  # the MAX encoder feeding openai-whisper's PyTorch decoder
            paths[impl] = Pipeline(impl, "bundled")
        elif impl not in paths:  # "max-bfloat16": the MAX path with a bf16 encoder
            paths[impl] = Pipeline(impl.split("-")[0], "bundled", dtype=impl.split("-")[1])
        return transcribe_clip(paths[impl], clip, dict(options))

    def run(impl: str, clip: str, options: tuple = ()) -> dict:
        return cached(impl, clip, tuple(options))
    return run


@pytest.fixture(scope="session")
def cpu_transcript(pipelines):
    """cpu_transcript(clip) -> openai-whisper float32 on the CPU, greedy, without word timestamps, as the GPU
    tests and the transcription benchmark run each path. Not the stored reference: that was transcribed with
    word timestamps, which move where transcribe() seeks in the long clip (without them its 6th segment starts
    at <|0.00|>, not <|0.28|>, and it has 15 segments, not 10: measured on the CPU)."""
    @functools.cache
    def run(clip: str) -> dict:
        return pipelines["cpu"].transcribe(CLIP_PATHS[clip])
    return run


@pytest.fixture(scope="session")
def clip_mels():
    """First-window log-mel (1, 80, 3000) of every fixture clip, by clip name."""
    from maxwhisper.golden import clip_mel
    return {clip.stem: clip_mel(clip) for clip in CLIPS}


@pytest.fixture(scope="session")
def speech_windows():
    """(names, mel (n, 80, 3000)): every clip's first 30 s window, and the long clip's later windows
    (from 30 s and from 60 s, the last one mostly padding), cut as whisper.transcribe cuts them."""
    import torch
    import whisper

    from maxwhisper import audio
    names, mels = [], []
    for clip in CLIPS:
        samples = torch.from_numpy(audio.load_audio(clip))
        full = whisper.log_mel_spectrogram(samples, 80, padding=whisper.audio.N_SAMPLES)
        for start in range(0, full.shape[-1] - whisper.audio.N_FRAMES, whisper.audio.N_FRAMES):
            names.append(f"{clip.stem}@{start // 100}s")
            mels.append(whisper.pad_or_trim(full[:, start:], whisper.audio.N_FRAMES).numpy())
    return names, np.stack(mels)


@pytest.fixture(scope="session")
def speech_reference(speech_windows, torch_model):
    """openai-whisper's PyTorch encoder taps of the speech windows (float32, CPU)."""
    from maxwhisper.reference import torch_taps
    return torch_taps(torch_model.encoder, speech_windows[1])


@pytest.fixture(scope="session")
def expected_transcripts():
    return {p.stem: json.loads(p.read_text()) for p in sorted((FIXTURES / "transcripts").glob("*.json"))}


@pytest.fixture(scope="session")
def rng():
    return np.random.default_rng(1234)


# --- the MAX decoder (two graphs, compiled once per run) ----------------------------------------

@pytest.fixture(scope="session")
def clip_features(torch_model, clip_mels):
    """PyTorch encoder features (1, 1500, d) of every clip's first window, by clip name."""
    import torch
    with torch.no_grad():
        return {name: torch_model.encoder(torch.from_numpy(mel)).numpy() for name, mel in clip_mels.items()}
