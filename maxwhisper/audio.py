"""Audio in, log-mel out: 16 kHz WAV without ffmpeg, anything else through ffmpeg when installed."""
from __future__ import annotations

import pathlib
import shutil

import numpy as np
import torch
import whisper

from maxwhisper.errors import MaxWhisperError

SAMPLE_RATE = whisper.audio.SAMPLE_RATE  # 16000
N_FRAMES = whisper.audio.N_FRAMES  # 3000 mel frames = 30 s


def load_audio(path: str | pathlib.Path) -> np.ndarray:
    """Mono float32 samples at 16 kHz in [-1, 1]."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise MaxWhisperError(f"audio file not found: {path}")
    if path.suffix.lower() in (".wav", ".flac"):
        import soundfile
        try:
            samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
        except Exception as exc:
            raise MaxWhisperError(f"{path}: unreadable audio ({str(exc).splitlines()[0][:100]})") from None
        if rate == SAMPLE_RATE:
            return np.ascontiguousarray(samples.mean(axis=1))
    if shutil.which("ffmpeg") is None:
        raise MaxWhisperError(f"{path}: only 16 kHz WAV/FLAC is read without ffmpeg; install ffmpeg "
                              "(apt-get install ffmpeg) or convert with: sox IN -r 16000 -c 1 OUT.wav")
    try:
        return whisper.audio.load_audio(str(path))
    except RuntimeError as exc:
        raise MaxWhisperError(f"{path}: ffmpeg could not decode it ({str(exc).splitlines()[-1][:100]})") from None


def log_mel(audio: np.ndarray, n_mels: int = 80) -> torch.Tensor:
    """Log-mel of the first 30 s window, padded or trimmed: (n_mels, 3000) float32."""
    audio = whisper.pad_or_trim(torch.from_numpy(np.asarray(audio, dtype=np.float32)))
    return whisper.log_mel_spectrogram(audio, n_mels)


def duration(audio: np.ndarray) -> float:
    return len(audio) / SAMPLE_RATE
