"""Audio in, log-mel out: 16 kHz WAV or FLAC without ffmpeg, anything else through ffmpeg when installed."""
from __future__ import annotations

import pathlib
import re
import shutil

import numpy as np
import torch
import whisper

from maxwhisper.errors import MaxWhisperError, reason

SAMPLE_RATE = whisper.audio.SAMPLE_RATE  # 16000


def load_audio(path: str | pathlib.Path) -> np.ndarray:
    """Mono float32 samples at 16 kHz in [-1, 1]."""
    path = pathlib.Path(path)
    if path.is_dir():
        raise MaxWhisperError(f"{path} is a directory, not an audio file; pass a file in it, e.g. {path / 'clip.wav'}")
    if not path.is_file():
        raise MaxWhisperError(f"audio file not found: {path}")
    if path.suffix.lower() in (".wav", ".flac"):
        import soundfile
        try:
            with soundfile.SoundFile(path) as f:
                samples, rate, log = f.read(dtype="float32", always_2d=True), f.samplerate, f.extra_info
        except Exception as exc:
            raise MaxWhisperError(f"{path}: unreadable audio ({reason(exc)[:100]})") from None
        # libsndfile reads what a cut-short WAV holds and logs "data : HEADER (should be HELD)"; a streamed WAV's
        # header may say 0 or 0xFFFFFFFF bytes (unknown length), which is not a truncation
        if (cut := re.search(r"^data : (\d+) \(should be (\d+)\)", log, re.M)) and \
                int(cut[2]) < int(cut[1]) < 0xFFFFFFFF:
            raise MaxWhisperError(f"{path}: truncated WAV: its header promises {cut[1]} bytes of audio, the file holds "
                                  f"{cut[2]}; re-copy or re-export the file")
        if not np.isfinite(samples).all():
            raise MaxWhisperError(f"{path}: holds NaN or Inf samples (a corrupt float WAV); re-export it, e.g. as "
                                  "16-bit PCM")
        if rate == SAMPLE_RATE:
            return np.ascontiguousarray(samples.mean(axis=1))
    if shutil.which("ffmpeg") is None:
        raise MaxWhisperError(f"{path}: only 16 kHz WAV/FLAC is read without ffmpeg; install ffmpeg "
                              "(apt-get install ffmpeg) or convert with: sox IN -r 16000 -c 1 OUT.wav")
    try:
        return whisper.audio.load_audio(str(path))
    except RuntimeError as exc:
        raise MaxWhisperError(f"{path}: ffmpeg could not decode it ({reason(exc, last=True)[:100]})") from None


def as_samples(audio) -> np.ndarray:
    """A 1-D float array (numpy or torch) of 16 kHz samples as contiguous float32, or one clear error."""
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu()
        audio = (audio.float() if audio.is_floating_point() else audio).numpy()
    if not isinstance(audio, np.ndarray):
        raise MaxWhisperError(f"audio is a {type(audio).__name__}: pass a path or a 1-D numpy array of 16 kHz float "
                              "samples, e.g. np.asarray(x, np.float32)")
    if audio.ndim != 1:
        raise MaxWhisperError(f"audio array has shape {audio.shape}: pass mono 16 kHz samples, e.g. " +
                              (f"x.mean(axis={int(np.argmin(audio.shape))})" if audio.ndim == 2 else "x.reshape(-1)"))
    if not np.issubdtype(audio.dtype, np.floating):
        scale = f", e.g. x / {2 ** (8 * audio.itemsize - 1)}" if np.issubdtype(audio.dtype, np.signedinteger) else ""
        raise MaxWhisperError(f"audio array has dtype {audio.dtype}: pass float samples in [-1, 1]{scale}")
    if not np.isfinite(audio).all():
        raise MaxWhisperError("audio array holds NaN or Inf samples; replace them first, e.g. np.nan_to_num(x)")
    return np.ascontiguousarray(audio, np.float32)


def log_mel(audio: np.ndarray, n_mels: int = 80) -> torch.Tensor:
    """Log-mel of the first 30 s window, padded or trimmed: (n_mels, 3000) float32."""
    if n_mels not in (80, 128):
        raise MaxWhisperError(f"n_mels {n_mels}: Whisper's mel filters have 80 bins (128 for large-v3); pass the "
                              "model's dims.n_mels")
    return whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(as_samples(audio))), n_mels)


def duration(audio: np.ndarray) -> float:
    return len(audio) / SAMPLE_RATE
