"""Numbers that judge the encoder: tensor agreement, word error rate, and FLOPs per call."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from whisper.model import ModelDimensions


@dataclass(frozen=True)
class Diff:
    """How far `actual` is from `expected`."""
    max_abs: float
    max_rel: float  # max |a - e| / (|e| + 1e-3): relative where values are not tiny
    cosine: float
    nmse: float  # sum((a - e)^2) / sum(e^2)
    worst: tuple[int, ...]  # index of the largest |a - e|
    actual_at_worst: float
    expected_at_worst: float

    def __str__(self) -> str:
        return (f"max|diff|={self.max_abs:.3g} max_rel={self.max_rel:.3g} cos={self.cosine:.7f} "
                f"nmse={self.nmse:.3g} worst at {self.worst}: {self.actual_at_worst:.6g} vs {self.expected_at_worst:.6g}")


def compare(actual, expected) -> Diff:
    a, e = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if a.shape != e.shape:
        raise ValueError(f"shape {a.shape} vs expected {e.shape}")
    diff = np.abs(a - e)
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.size else ()
    denom = float(np.sum(e * e)) or 1.0
    cos = float(np.sum(a * e) / (np.linalg.norm(a) * np.linalg.norm(e) or 1.0))
    return Diff(float(diff.max(initial=0.0)), float((diff / (np.abs(e) + 1e-3)).max(initial=0.0)), cos,
                float(np.sum((a - e) ** 2) / denom), tuple(int(i) for i in worst),
                float(a[worst]) if diff.size else 0.0, float(e[worst]) if diff.size else 0.0)


def normalize_text(text: str) -> list[str]:
    """Words of `text` after openai-whisper's English normalizer (case, punctuation, numbers)."""
    from whisper.normalizers import EnglishTextNormalizer
    return EnglishTextNormalizer()(text).split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words, on normalized text."""
    ref, hyp = normalize_text(reference), normalize_text(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[len(hyp)] / max(len(ref), 1)


def encoder_flops(dims: ModelDimensions, batch: int = 1) -> int:
    """Multiply-add FLOPs (2 per MAC) of one encoder call: convs, projections, attention, MLP."""
    d, t, m = dims.n_audio_state, dims.n_audio_ctx, dims.n_mels
    convs = 2 * (2 * t) * 3 * m * d + 2 * t * 3 * d * d
    per_layer = 2 * t * d * (3 * d + d + 8 * d) + 2 * 2 * t * t * d
    return batch * (convs + dims.n_audio_layer * per_layer)
