"""Shared test machinery: Hypothesis profiles, GPU detection and skips, session-scoped models and fixtures.

Compiled MAX models are session-scoped: each graph compiles once per test run (about 100 s cold on
2 cores, about 2 s from ~/.cache/modular), never per test or per Hypothesis example.
"""
from __future__ import annotations

import functools
import json
import os
import pathlib

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

ROOT = pathlib.Path(__file__).resolve().parent
FIXTURES = ROOT / "fixtures"
CLIPS = sorted((FIXTURES / "audio").glob("*.wav"))

settings.register_profile("dev", deadline=None, max_examples=25,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("ci", parent=settings.get_profile("dev"), derandomize=True, max_examples=30,
                          print_blob=True)
settings.load_profile(os.getenv("HYPOTHESIS_PROFILE", "ci" if os.getenv("CI") else "dev"))


@functools.cache
def gpu_status() -> tuple[bool, bool, str]:
    """(MAX sees an accelerator, torch sees CUDA, why not) for skipping `gpu` tests."""
    import torch
    try:
        from max.driver import accelerator_count
        max_gpu = accelerator_count() > 0
    except Exception:  # a broken driver install must skip, not error
        max_gpu = False
    torch_gpu = torch.cuda.is_available()
    why = [] if max_gpu else ["MAX sees no accelerator"]
    why += [] if torch_gpu else ["torch.cuda.is_available() is False"]
    return max_gpu, torch_gpu, "; ".join(why)


def pytest_collection_modifyitems(config, items):
    max_gpu, torch_gpu, why = gpu_status()
    if max_gpu and torch_gpu:
        return
    skip = pytest.mark.skip(reason=f"no GPU: {why}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


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
    """tiny.en, CPU, float32, output only: the production graph."""
    from maxwhisper.encoder import get_encoder
    return get_encoder(bundled, "cpu", "float32")


@pytest.fixture(scope="session")
def max_taps_encoder(bundled):
    """tiny.en, CPU, float32, with every tap as an output: the parity suite's graph."""
    from maxwhisper.encoder import get_encoder
    return get_encoder(bundled, "cpu", "float32", taps=True)


@pytest.fixture(scope="session")
def max_taps_encoder_random_tiny():
    """Seeded random weights with tiny's dims: the same compiled graph as tiny.en, other weights."""
    from maxwhisper import weights
    from maxwhisper.encoder import get_encoder
    return get_encoder(weights.load("random:tiny:0"), "cpu", "float32", taps=True)


@pytest.fixture(scope="session")
def max_bf16_encoder(bundled):
    from maxwhisper.encoder import get_encoder
    return get_encoder(bundled, "cpu", "bfloat16")


@pytest.fixture(scope="session")
def pipelines():
    """The cpu and max transcription paths on the bundled model, by name."""
    from maxwhisper.pipelines import Pipeline
    return {impl: Pipeline(impl, "bundled") for impl in ("cpu", "max")}


@pytest.fixture(scope="session")
def clip_mels():
    """First-window log-mel (1, 80, 3000) of every fixture clip, by clip name."""
    from maxwhisper.golden import clip_mel
    return {clip.stem: clip_mel(clip) for clip in CLIPS}


@pytest.fixture(scope="session")
def expected_transcripts():
    return {p.stem: json.loads(p.read_text()) for p in sorted((FIXTURES / "transcripts").glob("*.json"))}


@pytest.fixture(scope="session")
def rng():
    return np.random.default_rng(1234)


# --- the MAX decoder (two graphs, compiled once per run) ----------------------------------------

@pytest.fixture(scope="session")
def max_decoder(bundled):
    """tiny.en, CPU, float32: the cross and step graphs with the bundled weights."""
    from maxwhisper.decoder import get_decoder
    return get_decoder(bundled, "cpu", "float32")


@pytest.fixture(scope="session")
def clip_features(torch_model, clip_mels):
    """PyTorch encoder features (1, 1500, d) of every clip's first window, by clip name."""
    import torch
    with torch.no_grad():
        return {name: torch_model.encoder(torch.from_numpy(mel)).numpy() for name, mel in clip_mels.items()}
