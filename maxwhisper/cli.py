"""Command line: python -m maxwhisper {transcribe,encode,demo,dashboard} ..."""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

from maxwhisper.errors import MaxWhisperError

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "fixtures"


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_transcribe(args) -> int:
    from maxwhisper import audio
    from maxwhisper.pipelines import Pipeline, check_decoding
    samples = audio.load_audio(args.audio)  # checked first: a bad path fails before any model compiles
    options = decoding(args)
    check_decoding(options)  # as the audio; what needs the model is checked once it loads, before any compile
    pipe = Pipeline(args.impl, args.model, args.dtype, args.device, progress=_say, warps=args.step, decoding=options)
    result = pipe.transcribe(samples, word_timestamps=args.word_timestamps, show_progress=True)
    if args.json:
        print(json.dumps(result, default=float, indent=1))
    else:
        print(result["text"].strip())
        _say("timings: " + " ".join(f"{k}={v:.2f}s" for k, v in result["timings"].items()))
    return 0


def decoding(args) -> dict:
    """transcribe()'s decoding options from the command line: only those given, so openai-whisper's defaults
    hold for the rest (but greedy at temperature 0, without fallback, unless told)."""
    options = {name: getattr(args, name) for name, _, _ in DECODING if getattr(args, name) is not None}
    if args.temperature_increment_on_fallback is not None:  # as openai-whisper's CLI builds its fallback
        import numpy as np
        if args.temperature_increment_on_fallback <= 0:
            raise MaxWhisperError(f"--temperature-increment-on-fallback {args.temperature_increment_on_fallback}: "
                                  "give a step > 0, e.g. 0.2")
        start = options.get("temperature", 0.0)
        if not 0 <= start <= 1:
            raise MaxWhisperError(f"--temperature {start} with --temperature-increment-on-fallback: the fallback rises "
                                  "from it to 1.0, so start between 0 and 1, or drop the increment")
        options["temperature"] = tuple(np.arange(start, 1.0 + 1e-6, args.temperature_increment_on_fallback).tolist())
    if args.no_condition_on_previous_text:
        options["condition_on_previous_text"] = False
    return options


# openai-whisper's transcribe() options the transcribe command passes on: (name, type, help)
DECODING = [("language", str, "the spoken language, e.g. en or German (default: detected; English-only models: en)"),
            ("task", str, "transcribe (default) or translate to English (multilingual models)"),
            ("temperature", float, "sampling temperature (default 0: greedy)"),
            ("beam_size", int, "beam search with this many beams at temperature 0 (default: greedy)"),
            ("best_of", int, "candidates sampled at temperature > 0"),
            ("patience", float, "beam search patience"),
            ("initial_prompt", str, "text to condition the first window on")]


def cmd_encode(args) -> int:
    import numpy as np
    from maxwhisper import audio, weights
    if args.dtype == "int8":
        raise MaxWhisperError("--dtype int8 is for transcribe --impl faster-whisper; encode takes float32, bfloat16 "
                              "or float16")
    out = pathlib.Path(args.out)  # checked first, as the audio is: a bad path fails before any model loads
    if out.is_dir():
        raise MaxWhisperError(f"--out {out} is a directory; name the file, e.g. {out / 'features.npy'}")
    if out.suffix != ".npy":  # np.save would append .npy and write another file than the one named
        raise MaxWhisperError(f"--out {out}: the features are written as .npy; name the file {out.with_suffix('.npy')}")
    if not out.parent.is_dir():
        raise MaxWhisperError(f"--out {out}: {out.parent} is not a directory; create it (mkdir -p {out.parent}) or "
                              "choose another path")
    samples = audio.load_audio(args.audio)
    loaded = weights.load(args.model)
    mel = audio.log_mel(samples, loaded.dims.n_mels)[None]
    if args.impl == "max":
        from maxwhisper.encoder import get_encoder
        features = get_encoder(loaded, args.device, args.dtype, progress=_say)(mel)
    else:
        import torch
        device = "cuda" if args.device == "gpu" else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise MaxWhisperError("--device gpu needs a CUDA GPU for PyTorch and none is visible; use --device cpu")
        from maxwhisper.reference import torch_encoder
        dtype = getattr(torch, args.dtype)
        with torch.no_grad():
            features = torch_encoder(loaded, device, dtype)(mel.to(device, dtype)).float().cpu().numpy()
    try:
        np.save(out, features.astype(np.float32))
    except OSError as exc:
        raise MaxWhisperError(f"--out {out}: cannot write it ({exc.strerror or exc}); choose a writable path") from None
    _say(f"wrote {out}: {features.shape} float32")
    return 0


def cmd_demo(args) -> int:
    from maxwhisper.demo import run_demo
    return run_demo(pathlib.Path(args.fixtures), args.model, args.dtype, progress=_say)


def cmd_dashboard(args) -> int:
    from maxwhisper.dashboard import main as dashboard_main
    return dashboard_main(args)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="maxwhisper", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, impls):
        sp.add_argument("audio", help="audio file (16 kHz WAV or FLAC read directly; other formats need ffmpeg)")
        sp.add_argument("--impl", choices=impls, default=impls[0])
        sp.add_argument("--model", default="bundled", help="bundled | CT2 dir | file.pt | tiny, base.en... | random:SIZE")
        sp.add_argument("--dtype", choices=["float32", "bfloat16", "float16", "int8"], default="float32",
                        help="the encoder's dtype (int8: faster-whisper only)")
        sp.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="where the MAX graphs run")

    t = sub.add_parser("transcribe", help="transcribe an audio file")
    common(t, ["max", "max-encoder", "cpu", "gpu", "faster-whisper"])
    t.add_argument("--word-timestamps", action="store_true")
    for name, kind, help in DECODING:
        t.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=help)
    t.add_argument("--temperature-increment-on-fallback", type=float, default=None,
                   help="fall back to temperatures rising by this step up to 1.0 when a window fails openai-whisper's "
                        "thresholds (its CLI's default is 0.2; default here: no fallback)")
    t.add_argument("--no-condition-on-previous-text", action="store_true",
                   help="decode each window without the previous window's text as its prompt")
    step = t.add_mutually_exclusive_group()
    step.add_argument("--warps", dest="step", action="store_const", const=True,
                      help="--impl max: the decoder step as the warp kernels (the default on an NVIDIA GPU; on the "
                           "CPU, their emulation)")
    step.add_argument("--graph-ops", dest="step", action="store_const", const=False,
                      help="--impl max: the decoder step as MAX graph ops (on a GPU instead of the warp kernels, "
                           "on the CPU instead of its fused kernel)")
    t.add_argument("--json", action="store_true", help="print the whole result dict as JSON")
    t.set_defaults(func=cmd_transcribe)

    e = sub.add_parser("encode", help="write encoder features for the first 30 s window")
    common(e, ["max", "torch"])
    e.add_argument("--out", required=True, help="output .npy, (1, 1500, d_model) float32")
    e.set_defaults(func=cmd_encode)

    d = sub.add_parser("demo", help="transcribe the fixture clips on every available path")
    d.add_argument("--fixtures", default=str(FIXTURES))
    d.add_argument("--model", default="bundled")
    d.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    d.set_defaults(func=cmd_demo)

    b = sub.add_parser("dashboard", help="render the benchmark history as one HTML page")
    b.add_argument("results", nargs="?", default=".benchmarks")
    b.add_argument("-o", "--output", default="report.html")
    b.add_argument("--baseline", default=None, help="a saved run (file) to compare against")
    b.add_argument("--threshold", action="append", default=[], metavar="GROUP=PCT",
                   help="regression threshold per benchmark group, e.g. encoder-paired=5 (defaults: maxwhisper/regression.py)")
    b.add_argument("--allow-missing", action="store_true",
                   help="a case missing from the latest run is reported, not a failure")
    b.add_argument("--github-json", default=None, help="also write github-action-benchmark customSmallerIsBetter JSON")
    b.set_defaults(func=cmd_dashboard)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except MaxWhisperError as exc:
        print(f"maxwhisper: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
