"""Golden tensors and transcripts from the PyTorch reference: `python -m maxwhisper.golden`.

Writes, for the bundled tiny.en on each fixture clip and for seeded random weights of every official
size, the encoder taps as safetensors: row slices of each tap plus per-tap statistics, with metadata
(weights hash, versions, seed). Also writes the reference transcripts (text, tokens, word times), and
per clip the decoder's taps (`tiny.en-decoder-CLIP`): PyTorch's TextDecoder run on the clip's first
transcript segment (start-of-transcript token first) against its first window's PyTorch features,
keeping DECODER_CHANNELS channels of every token row, the logits at each row's top DECODER_TOP tokens
and a fixed set of columns, the argmax per row, and statistics.
Never edit these files by hand: change the code or the clips and re-run this.
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import pathlib

import numpy as np
import torch

from maxwhisper import audio, weights
from maxwhisper.reference import torch_taps

ROOT = pathlib.Path(__file__).resolve().parent.parent / "fixtures"
GOLDEN = ROOT / "golden"
TRANSCRIPTS = ROOT / "transcripts"
ROWS = 8  # rows kept from the start, middle and end of every tap
RANDOM_CHANNELS = 128  # random-weight sizes keep this many channels per row (statistics cover them all)
RANDOM_SIZES = ("tiny", "base", "small", "medium", "large-v3", "large-v3-turbo")
DECODER_CHANNELS = 96
DECODER_TOP = 8
DECODER_COLUMNS = np.arange(0, 51864, 997)  # spread over the whole vocabulary, timestamps included
SEED = 0


def tap_rows(n: int) -> np.ndarray:
    """Time indices kept in the golden slices: the first, middle and last ROWS rows (edges catch padding bugs)."""
    mid = n // 2 - ROWS // 2
    return np.unique(np.concatenate([np.arange(ROWS), np.arange(mid, mid + ROWS), np.arange(n - ROWS, n)]))


def stats(x: np.ndarray) -> np.ndarray:
    """mean, std, min, max, mean |x| and RMS of a tap: a fingerprint of the whole tensor."""
    x = x.astype(np.float64)
    return np.array([x.mean(), x.std(), x.min(), x.max(), np.abs(x).mean(), np.sqrt((x * x).mean())])


STAT_NAMES = ("mean", "std", "min", "max", "mean_abs", "rms")


def random_mel(n_mels: int, seed: int = SEED, batch: int = 1) -> np.ndarray:
    """A deterministic log-mel-like input in Whisper's value range ([-1.5, 1.5] after its scaling)."""
    return np.random.default_rng(seed).uniform(-1.5, 1.5, (batch, n_mels, 3000)).astype(np.float32)


def taps_to_tensors(taps: dict[str, np.ndarray], mel: np.ndarray, channels: int | None = None) -> dict[str, np.ndarray]:
    """What a golden file stores: mel statistics, and per tap a slice (rows x channels) and statistics."""
    out = {"mel.stats": stats(mel)}
    for name, t in taps.items():
        out[f"{name}.rows"] = tap_rows(t.shape[1]).astype(np.int64)
        out[f"{name}.slice"] = np.ascontiguousarray(t[0, tap_rows(t.shape[1]), :channels], dtype=np.float32)
        out[f"{name}.stats"] = stats(t[0])
    return out


def metadata(loaded: weights.LoadedModel, **extra) -> dict[str, str]:
    meta = {"source": loaded.source, "weights_sha256": loaded.encoder_sha256, "dtype": "float32", "seed": str(SEED),
            "dims": json.dumps(vars(loaded.dims)), "taps": json.dumps(list(extra.pop("taps")))}
    for pkg in ("openai-whisper", "torch", "max", "numpy"):
        meta[f"version.{pkg}"] = md.version(pkg)
    meta.update({k: str(v) for k, v in extra.items()})
    return meta


def clip_mel(path: pathlib.Path, n_mels: int = 80) -> np.ndarray:
    return audio.log_mel(audio.load_audio(path), n_mels)[None].numpy()


def write_golden(path: pathlib.Path, loaded: weights.LoadedModel, mel: np.ndarray, channels: int | None = None,
                 **meta) -> None:
    from safetensors.numpy import save_file
    taps = torch_taps(loaded.whisper_encoder(), mel)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(taps_to_tensors(taps, mel, channels), str(path), metadata=metadata(loaded, taps=taps, **meta))
    print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")


def decoder_tokens(transcript_tokens: list[list[int]], sot: int = 50257) -> np.ndarray:
    """The decoder golden's input: start-of-transcript, then the first segment's tokens, as (1, n)."""
    return np.array([[sot, *transcript_tokens[0]]], dtype=np.int64)


def decoder_to_tensors(taps: dict[str, np.ndarray], tokens: np.ndarray) -> dict[str, np.ndarray]:
    """What a decoder golden stores: the tokens, per tap a channel slice and statistics, and logit columns."""
    from maxwhisper.reference import logit_columns
    out = {"tokens": tokens}
    for name, t in taps.items():
        if name == "logits":
            cols = logit_columns(t[0], DECODER_COLUMNS, DECODER_TOP)
            out.update({"logits.columns": cols, "logits.slice": np.take_along_axis(t[0], cols, axis=-1),
                        "logits.argmax": t[0].argmax(-1).astype(np.int64)})
        else:
            out[f"{name}.slice"] = np.ascontiguousarray(t[0, :, :DECODER_CHANNELS], dtype=np.float32)
        out[f"{name}.stats"] = stats(t[0])
    return out


def write_decoder_golden(path: pathlib.Path, loaded: weights.LoadedModel, clip: pathlib.Path,
                         transcript_tokens: list[list[int]]) -> None:
    from safetensors.numpy import save_file
    from maxwhisper.reference import torch_decoder_taps
    model = loaded.whisper_model("cpu").eval()
    with torch.no_grad():
        features = model.encoder(torch.from_numpy(clip_mel(clip))).numpy()
    tokens = decoder_tokens(transcript_tokens)
    taps = torch_decoder_taps(model.decoder, tokens, features)
    meta = metadata(loaded, taps=taps, clip=clip.name, features="PyTorch encoder, first window")
    meta["weights_sha256"] = loaded.decoder_sha256
    save_file(decoder_to_tensors(taps, tokens), str(path), metadata=meta)
    print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")


def transcript(loaded: weights.LoadedModel, clip: pathlib.Path) -> dict:
    """The PyTorch CPU path's greedy (temperature 0) transcript with tokens and word times."""
    from maxwhisper.pipelines import Pipeline
    result = Pipeline("cpu", loaded.source).transcribe(clip, word_timestamps=True)
    return {"text": result["text"], "tokens": [s["tokens"] for s in result["segments"]],
            "words": [[w["word"], round(w["start"], 3), round(w["end"], 3)]
                      for s in result["segments"] for w in s.get("words", [])]}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", nargs="*", default=list(RANDOM_SIZES), help="random-weight sizes to write")
    args = p.parse_args(argv)
    torch.manual_seed(SEED)
    bundled = weights.load("bundled")
    for clip in sorted((ROOT / "audio").glob("*.wav")):
        write_golden(GOLDEN / f"tiny.en-{clip.stem}.safetensors", bundled, clip_mel(clip), clip=clip.name)
        TRANSCRIPTS.mkdir(parents=True, exist_ok=True)
        reference = transcript(bundled, clip)
        (TRANSCRIPTS / f"{clip.stem}.json").write_text(json.dumps(reference, indent=1) + "\n")
        write_decoder_golden(GOLDEN / f"tiny.en-decoder-{clip.stem}.safetensors", bundled, clip, reference["tokens"])
    for size in args.sizes:
        loaded = weights.load(f"random:{size}:{SEED}")
        write_golden(GOLDEN / f"random-{size}.safetensors", loaded, random_mel(loaded.dims.n_mels),
                     channels=RANDOM_CHANNELS, clip="random_mel")
        del loaded


if __name__ == "__main__":
    main()
