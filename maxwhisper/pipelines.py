"""Three interchangeable transcription paths with one interface and per-stage timings.

    cpu  openai-whisper on CPU (float32)
    gpu  openai-whisper on CUDA (float16)
    max  the MAX encoder feeding openai-whisper's PyTorch decoder (CPU decoder, or CUDA when --device gpu)

Each returns openai-whisper's `transcribe()` result dict plus result["timings"] in seconds:
load, compile, encode, decode, total.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import whisper

from maxwhisper import audio as audio_mod
from maxwhisper import weights
from maxwhisper.encoder import MaxAudioEncoder, get_encoder
from maxwhisper.errors import MaxWhisperError
from maxwhisper.reference import torch_encoder

IMPLS = ("cpu", "gpu", "max")


def cuda_available() -> bool:
    return torch.cuda.is_available()


class _EncoderTimer:
    """Times a torch encoder through forward hooks, synchronizing CUDA so the time is the device's."""

    def __init__(self, module: torch.nn.Module):
        self.seconds, self._start = 0.0, 0.0
        module.register_forward_pre_hook(self._pre)
        module.register_forward_hook(self._post)

    def _sync(self, mel: torch.Tensor) -> None:
        if mel.is_cuda:
            torch.cuda.synchronize(mel.device)

    def _pre(self, module, args):
        self._sync(args[0])
        self._start = time.perf_counter()

    def _post(self, module, args, out):
        self._sync(out)
        self.seconds += time.perf_counter() - self._start


class _CastEncoder(torch.nn.Module):
    """Runs a reduced-precision torch encoder and hands float32 features to the float32 decoder."""

    def __init__(self, encoder: torch.nn.Module):
        super().__init__()
        self.encoder = encoder
        self.dtype = next(encoder.parameters()).dtype

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.encoder(mel.to(self.dtype)).float()


@dataclass
class Pipeline:
    """A loaded model ready to transcribe, on one of the three paths."""
    impl: str = "max"
    model: str = "bundled"
    dtype: str = "float32"  # the encoder's (max and cpu paths); the gpu path is always float16
    device: str = "cpu"  # where the max path's encoder runs
    progress: Callable[[str], None] | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        if self.impl not in IMPLS:
            raise MaxWhisperError(f"unknown --impl {self.impl!r}; choose one of {', '.join(IMPLS)}")
        if (self.impl == "gpu" or (self.impl == "max" and self.device == "gpu")) and not cuda_available():
            raise MaxWhisperError(f"--impl {self.impl} needs a CUDA GPU for PyTorch and none is visible; "
                                  "use --impl cpu or --impl max")
        start = time.perf_counter()
        self.loaded = weights.load(self.model)
        torch_device = "cuda" if self.impl == "gpu" or self.device == "gpu" else "cpu"
        self.whisper = self.loaded.whisper_model(torch_device)
        if self.impl == "gpu":
            self.whisper = self.whisper.half()
        self.timings["load"] = time.perf_counter() - start
        self.timings["compile"] = 0.0
        if self.impl == "max":
            encoder = get_encoder(self.loaded, self.device, self.dtype, progress=self.progress)
            self.timings["compile"] = encoder.compile_s
            self.whisper.encoder = self._max_encoder = MaxAudioEncoder(encoder)
        else:
            if self.impl == "cpu" and self.dtype != "float32":  # a reduced-precision PyTorch reference
                self.whisper.encoder = _CastEncoder(torch_encoder(self.loaded, "cpu", getattr(torch, self.dtype)))
            self._timer = _EncoderTimer(self.whisper.encoder)

    @property
    def encode_seconds(self) -> float:
        return self._max_encoder.seconds if self.impl == "max" else self._timer.seconds

    def transcribe(self, audio, word_timestamps: bool = False, show_progress: bool = False, **options) -> dict:
        """openai-whisper's transcribe() on this path; `audio` is a path or 16 kHz samples."""
        samples = audio_mod.load_audio(audio) if not isinstance(audio, np.ndarray) else audio
        encode_before = self.encode_seconds
        start = time.perf_counter()
        options.setdefault("temperature", 0.0)
        result = whisper.transcribe(self.whisper, samples, fp16=self.impl == "gpu", word_timestamps=word_timestamps,
                                    verbose=False if show_progress else None, **options)
        total = time.perf_counter() - start
        encode = self.encode_seconds - encode_before
        result["timings"] = {"load": self.timings["load"], "compile": self.timings["compile"], "encode": encode,
                             "decode": total - encode, "total": total}
        result["impl"] = self.impl
        result["audio_seconds"] = audio_mod.duration(samples)
        return result
