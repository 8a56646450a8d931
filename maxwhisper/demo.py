"""`make demo`: the fixture clips transcribed on every available path, side by side."""
from __future__ import annotations

import pathlib
from collections.abc import Callable

from maxwhisper.errors import MaxWhisperError
from maxwhisper.metrics import word_error_rate
from maxwhisper.pipelines import Pipeline, cuda_available


def run_demo(fixtures: pathlib.Path, model: str = "bundled", dtype: str = "float32",
             progress: Callable[[str], None] = print) -> int:
    clips = sorted((fixtures / "audio").glob("*.wav"))
    if not clips:
        raise MaxWhisperError(f"no fixture clips in {fixtures / 'audio'}; run python fixtures/make_audio.py")
    impls = ["cpu", "gpu"] if cuda_available() else ["cpu"]
    if "gpu" not in impls:
        progress("no CUDA GPU visible: showing the CPU paths")
    impls += ["max-encoder", "max"]
    pipes = {impl: Pipeline(impl, model, dtype if impl.startswith("max") else "float32", progress=progress)
             for impl in impls}
    if model == "bundled" or pathlib.Path(model).is_dir():  # the peer reads CTranslate2 model directories
        pipes["faster-whisper"] = Pipeline("faster-whisper", model, "float32")
    # One untimed transcription of the shortest clip per path first: otherwise the first clip's row carries each path's
    # first-call costs (allocations, caches, lazy imports). The long clip's `max` row read 1.25 s without it and 1.15 s
    # with it (decode 0.89 and 0.80 s; AMD EPYC Zen 5), the benchmark's warm rounds 0.96-1.01 s
    warm = min(clips, key=lambda clip: clip.stat().st_size)
    progress(f"warming each path up on {warm.name} (untimed)")
    for pipe in pipes.values():
        pipe.transcribe(warm)
    rows, disagreements = [], 0
    for clip in clips:
        script = clip.with_suffix(".txt").read_text().strip() if clip.with_suffix(".txt").exists() else ""
        results = {impl: pipe.transcribe(clip) for impl, pipe in pipes.items()}
        reference = results["cpu"]["text"].strip()
        for impl, r in results.items():
            text, t = r["text"].strip(), r["timings"]
            same = text == reference
            disagreements += impl.startswith("max") and not same
            rows.append((clip.stem, f"{r['audio_seconds']:.1f}", impl, f"{word_error_rate(reference, text):.3f}",
                         f"{word_error_rate(script, text):.3f}" if script else "-", "yes" if same else "NO",
                         f"{t['encode']:.2f}", f"{t['decode']:.2f}", f"{t['total']:.2f}",
                         f"{r['audio_seconds'] / t['total']:.1f}x", text[:60] + ("..." if len(text) > 60 else "")))
    header = ("clip", "audio s", "impl", "WER vs cpu", "WER vs script", "same text", "encode s", "decode s",
              "total s", "x real time", "text")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    print("load/compile s: " + ", ".join(f"{impl} {p.timings['load']:.1f}/{p.timings['compile']:.1f}"
                                         for impl, p in pipes.items()))
    if disagreements:
        print(f"FAIL: a MAX path's text differs from PyTorch's on {disagreements} clip(s)")
        return 1
    print(f"OK: both MAX paths give the same text as PyTorch on all {len(clips)} clips")
    return 0
