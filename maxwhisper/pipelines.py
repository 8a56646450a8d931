"""Interchangeable transcription paths with one interface and per-stage timings.

    cpu             openai-whisper on CPU (float32)
    gpu             openai-whisper on CUDA (float16)
    max             the MAX encoder and the MAX decoder, driven by openai-whisper's transcribe()
    max-encoder     the MAX encoder feeding openai-whisper's PyTorch decoder
    faster-whisper  faster-whisper (CTranslate2) on the same model files, float32 or int8: the peer

Each returns openai-whisper's `transcribe()` result dict (faster-whisper: the same keys it has) plus
result["timings"] in seconds: load, compile, encode, decode, total.
"""
from __future__ import annotations

import math
import os
import pathlib
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import whisper

from maxwhisper import audio as audio_mod
from maxwhisper import weights
from maxwhisper.decoder import get_decoder
from maxwhisper.encoder import MaxAudioEncoder, get_encoder
from maxwhisper.errors import MaxWhisperError, reason
from maxwhisper.inference import DecodeTimer, use_max_decoder
from maxwhisper.reference import torch_encoder
from maxwhisper.session import DEVICES

IMPLS = ("cpu", "gpu", "max", "max-encoder", "faster-whisper")
TASKS = ("transcribe", "translate")


def check_decoding(options: dict, languages: int | None = None, model: str = "", another: str = "") -> None:
    """Refuses, in one line before any window decodes, transcribe() options that openai-whisper would ignore
    silently (a language or a translation asked of an English-only model, best-of without sampling, beam search
    without a temperature 0) or reject from deep inside a window's DecodingTask; a language given by name or in
    capitals becomes its code, as every path takes it. `languages`: the model's (0: English-only; None: not loaded
    yet, so only what needs no model is checked); `another`: the fix where the model cannot do it."""
    from whisper.tokenizer import LANGUAGES, TO_LANGUAGE_CODE
    language, task = options.get("language"), options.get("task", "transcribe")
    if task not in TASKS:
        raise MaxWhisperError(f"unknown task {task!r}; choose transcribe or translate")
    if language is not None:
        code = language.lower() if language.lower() in LANGUAGES else TO_LANGUAGE_CODE.get(language.lower())
        if code is None:
            raise MaxWhisperError(f"unknown language {language!r}; give a code such as en or de, or a name such as German")
        options["language"] = code
        if code != "en" and languages == 0:
            raise MaxWhisperError(f"--language {language}: --model {model} is English-only and would transcribe English "
                                  f"regardless; use {another} or drop --language")
        if languages and code not in list(LANGUAGES)[:languages]:
            raise MaxWhisperError(f"--language {language}: --model {model} knows {languages} languages and not this one; "
                                  "use a model that does (large-v3 knows 100)")
    if task == "translate" and languages == 0:
        raise MaxWhisperError(f"--task translate: --model {model} is English-only and cannot translate; use {another}")
    temperatures = np.atleast_1d(np.asarray(options.get("temperature", 0.0), dtype=float))
    if temperatures.size == 0 or not np.isfinite(temperatures).all() or (temperatures < 0).any():
        raise MaxWhisperError(f"temperature {options.get('temperature')}: give one or more temperatures >= 0")
    for name in ("beam_size", "best_of"):
        if options.get(name) is not None and options[name] < 1:
            raise MaxWhisperError(f"--{name.replace('_', '-')} {options[name]}: give 1 or more")
    if options.get("best_of") is not None and not (temperatures > 0).any():
        raise MaxWhisperError("--best-of picks among samples at a temperature above 0, and every temperature here is 0 "
                              "(greedy); add --temperature-increment-on-fallback 0.2 (or --temperature 0.5), or drop "
                              "--best-of")
    for name in ("beam_size", "patience"):
        if options.get(name) is not None and not (temperatures == 0).any():
            raise MaxWhisperError(f"--{name.replace('_', '-')} applies to beam search at temperature 0, and no "
                                  "temperature here is 0; start at --temperature 0, or drop it")
    if options.get("patience") is not None and options.get("beam_size") is None:
        raise MaxWhisperError("--patience applies to beam search: give --beam-size too")
    if options.get("length_penalty") is not None and not 0 <= options["length_penalty"] <= 1:
        raise MaxWhisperError(f"length_penalty {options['length_penalty']}: give a value between 0 and 1")


def check_clips(options: dict, samples: np.ndarray) -> None:
    """clip_timestamps within the audio: openai-whisper's window loop never ends on a clip whose end lies past the
    audio's last frame (its seek stops there, short of the end)."""
    clips = options.get("clip_timestamps", "0")
    try:
        times = [float(t) for t in (clips.split(",") if clips else [])] if isinstance(clips, str) else list(map(float, clips))
    except (TypeError, ValueError):
        raise MaxWhisperError(f"clip_timestamps {clips!r}: give seconds as \"start,end,...\" or a list of floats") from None
    last = samples.size // whisper.audio.HOP_LENGTH  # the log-mel's frames of content, as transcribe() counts them
    for t in times:
        if not math.isfinite(t) or t < 0 or round(t * whisper.audio.FRAMES_PER_SECOND) > last:
            raise MaxWhisperError(f"clip_timestamps {clips!r}: {t:g} s lies outside the audio (0 to "
                                  f"{last / whisper.audio.FRAMES_PER_SECOND:g} s); give times within it (openai-whisper's "
                                  "window loop never ends on a clip that ends past the audio)")


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
    """A loaded model ready to transcribe, on one of the paths in IMPLS."""
    impl: str = "max"
    model: str = "bundled"
    dtype: str = "float32"  # the encoder's (max and cpu paths), or faster-whisper's compute type (float32, int8)
    device: str = "cpu"  # where the max paths' graphs run
    threads: int = 0  # faster-whisper's cpu_threads (0: all cores, as torch and MAX use)
    capture: bool | None = None  # GPU decoder steps replay a captured device graph (None: MAXWHISPER_CAPTURE)
    # the max path's decoder step: True the warp kernels (on CPU their emulation), False MAX graph ops;
    # None: the warp kernels on an NVIDIA GPU, the CPU kernel (decoder_block) on CPU
    warps: bool | None = None
    progress: Callable[[str], None] | None = None
    # transcribe() options every transcription of this pipeline takes (its own override them), checked as soon as
    # the model is loaded, before any graph compiles
    decoding: dict = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        self.decoding = dict(self.decoding)  # checked and normalised here, not in the caller's dict
        if self.impl not in IMPLS:
            raise MaxWhisperError(f"unknown --impl {self.impl!r}; choose one of {', '.join(IMPLS)}")
        if self.warps is not None and self.impl != "max":
            raise MaxWhisperError(f"--warps and --graph-ops choose the max path's decoder step, and --impl {self.impl} "
                                  "has none; use --impl max")
        dtypes = ("float32", "int8") if self.impl == "faster-whisper" else ("float32", "bfloat16", "float16")
        if self.dtype not in dtypes:
            raise MaxWhisperError(f"--impl {self.impl} takes --dtype {', '.join(dtypes[:-1])} or {dtypes[-1]}, not "
                                  f"{self.dtype!r}" + ("; int8 is faster-whisper's" if self.dtype == "int8" else ""))
        if self.impl == "gpu" and self.dtype != "float32":  # refused, not quietly run in fp16 anyway
            raise MaxWhisperError(f"--impl gpu runs openai-whisper's own fp16 path, so --dtype {self.dtype} would change "
                                  "nothing; drop --dtype (it sets the MAX encoder's precision: --impl max --device gpu)")
        if self.device not in DEVICES:
            raise MaxWhisperError(f"unknown device {self.device!r}; choose cpu or gpu")
        if self.device == "gpu" and self.impl in ("cpu", "faster-whisper"):  # refused, not quietly run on the CPU
            raise MaxWhisperError(f"--impl {self.impl} runs on the CPU only, not --device gpu; on a GPU use --impl gpu "
                                  "(openai-whisper on CUDA) or --impl max --device gpu")
        self.decode_timer = None
        self._whole_pass_decoder = None  # the max path's MaxTextDecoder's (word alignment, language detection)
        if self.impl == "faster-whisper":
            return self._init_faster_whisper()
        # PyTorch computes on CUDA on the `gpu` path and as the decoder under a GPU `max-encoder`. The `max` path
        # keeps openai-whisper's loop on the CPU whatever device its graphs use: it needs no CUDA torch (the
        # `make` install on a GPU box has a CPU one), and each step's logits stay on the host.
        torch_cuda = self.impl == "gpu" or (self.impl == "max-encoder" and self.device == "gpu")
        if torch_cuda and not cuda_available():  # --impl gpu ignores --device: its fix is another path
            encoder = self.impl == "max-encoder"
            raise MaxWhisperError(f"--impl {self.impl}{' --device gpu' * encoder} needs a CUDA GPU for PyTorch and none "
                                  f"is visible; use {'--device cpu' if encoder else '--impl cpu'} or --impl max")
        start = time.perf_counter()
        self.loaded = weights.load(self.model)
        torch_device = "cuda" if torch_cuda else "cpu"
        # float32 weights on every path: openai-whisper's fp16 casts activations and each Linear's weight
        # itself (its LayerNorm needs float32 weights: a .half() model fails with "found Half", seen on an H200)
        self.whisper = self.loaded.whisper_model(torch_device)
        self.timings["load"] = time.perf_counter() - start
        self._check(self.decoding)
        self.timings["compile"] = 0.0
        if self.impl.startswith("max"):
            encoder = get_encoder(self.loaded, self.device, self.dtype, progress=self.progress)
            self.timings["compile"] = encoder.compile_s
            self.whisper.encoder = self._max_encoder = MaxAudioEncoder(encoder)
            if self.impl == "max":
                decoder = get_decoder(self.loaded, self.device, progress=self.progress, warps=bool(self.warps),
                                      fused=False if self.warps is False else None)
                self.timings["compile"] += decoder.compile_s
                self._max_decoder = decoder
                self.decode_timer = DecodeTimer()
                use_max_decoder(self.whisper, decoder, self.decode_timer, self.capture, whole_pass=self._whole_pass)
        else:
            if self.impl == "cpu" and self.dtype != "float32":  # a reduced-precision PyTorch reference
                self.whisper.encoder = _CastEncoder(torch_encoder(self.loaded, "cpu", getattr(torch, self.dtype)))
            self._timer = _EncoderTimer(self.whisper.encoder)

    def _init_faster_whisper(self) -> None:
        if self.model != "bundled" and not pathlib.Path(self.model).is_dir():
            raise MaxWhisperError("--impl faster-whisper takes --model bundled or a CTranslate2 model directory")
        path = weights.bundled_path() if self.model == "bundled" else pathlib.Path(self.model)
        if not (path / "config.json").is_file():  # CTranslate2 fails on it as a JSON type error
            raise MaxWhisperError(f"{path}: no config.json here; faster-whisper needs a CTranslate2 model directory "
                                  "with model.bin and config.json: re-copy it, or convert with ct2-transformers-converter")
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise MaxWhisperError("--impl faster-whisper needs the faster-whisper package: "
                                  "pip install -e '.[test]'") from None
        start = time.perf_counter()
        try:
            self.fw = WhisperModel(str(path), device="cpu", compute_type=self.dtype, cpu_threads=self.threads)
        except Exception as exc:  # CTranslate2 raises RuntimeError for a corrupt file, ValueError for others
            raise MaxWhisperError(f"{path}: faster-whisper could not load this model "
                                  f"({reason(exc, typed=True)[:120]}); re-copy or re-convert the model directory") from None
        self.timings.update(load=time.perf_counter() - start, compile=0.0)
        self._check(self.decoding)

    def _transcribe_faster_whisper(self, samples: np.ndarray, word_timestamps: bool, **options) -> dict:
        # openai-whisper's option names and defaults where faster-whisper's differ: greedy unless told, one best
        # candidate unless told (its defaults are 5 and 5), its own log_prob_threshold, suppress_tokens as a list
        options["beam_size"] = options.get("beam_size") or 1
        options["best_of"] = options.get("best_of") or 1
        if "logprob_threshold" in options:
            options["log_prob_threshold"] = options.pop("logprob_threshold")
        if isinstance(options.get("suppress_tokens"), str):
            options["suppress_tokens"] = [int(t) for t in options["suppress_tokens"].split(",") if t]
        segments, info = self.fw.transcribe(samples, word_timestamps=word_timestamps, vad_filter=False, **options)
        segments = list(segments)  # the generator runs the model
        return {"text": "".join(s.text for s in segments),
                "segments": [{"start": s.start, "end": s.end, "text": s.text, "tokens": list(s.tokens)}
                             for s in segments], "language": info.language}

    @property
    def encode_seconds(self) -> float:
        if self.impl == "faster-whisper":
            return 0.0
        return self._max_encoder.seconds if self.impl.startswith("max") else self._timer.seconds

    def _check(self, options: dict) -> None:
        if self.impl == "faster-whisper":
            model, another = self.fw.model, "a multilingual CTranslate2 model directory"
        else:
            model, another = self.whisper, "a multilingual model (tiny, base, small...)"
        check_decoding(options, model.num_languages if model.is_multilingual else 0, self.model, another)

    def _whole_pass(self):
        """The decoder of openai-whisper's whole-sequence passes on the max path (inference.MaxTextDecoder), compiled
        on first use; its compile counts as the pipeline's, not as a transcription's decode time."""
        if self._whole_pass_decoder is None:
            self._whole_pass_decoder = get_decoder(self.loaded, self.device, progress=self.progress, cross_qk=True)
            self.timings["compile"] += self._whole_pass_decoder.compile_s
        return self._whole_pass_decoder

    def transcribe(self, audio, word_timestamps: bool = False, show_progress: bool = False, **options) -> dict:
        """openai-whisper's transcribe() on this path; `audio` is a path or 16 kHz samples (a 1-D float array)."""
        samples = audio_mod.load_audio(audio) if isinstance(audio, (str, os.PathLike)) else audio_mod.as_samples(audio)
        options = {"temperature": 0.0, **self.decoding, **options}
        self._check(options)
        check_clips(options, samples)
        encode_before = self.encode_seconds
        if self.impl.startswith("max"):  # windows are reused within a transcription only (fallback, word alignment)
            self._max_encoder.forget_last()
            if self.impl == "max":
                self._max_decoder.forget_last()
                if word_timestamps or (self.whisper.is_multilingual and options.get("language") is None):
                    self._whole_pass()  # compiled before the clock starts
        start = time.perf_counter()
        if self.impl == "faster-whisper":
            result = self._transcribe_faster_whisper(samples, word_timestamps, **options)
        else:
            threads = torch.get_num_threads()
            if self.impl == "max" and self.device == "cpu":
                # What torch still does per step (logit filters, log-softmax over one vocabulary row) is
                # too small to split, and torch's idle worker threads spin on the cores the MAX decoder
                # runs on: measured on the long clip, 2 torch threads 9.6-10.6 s, 1 thread 6.8 s.
                torch.set_num_threads(1)
            try:
                with warnings.catch_warnings():
                    if self.impl == "max":  # openai-whisper's model holds only what its loop needs, on the CPU,
                        # while the graphs run on `device`: its "inference on CPU" warning would mislead
                        warnings.filterwarnings("ignore", "Performing inference on CPU when CUDA is available")
                    result = whisper.transcribe(self.whisper, samples, fp16=self.impl == "gpu",
                                                word_timestamps=word_timestamps,
                                                verbose=False if show_progress else None, **options)
            finally:
                torch.set_num_threads(threads)
        total = time.perf_counter() - start
        encode = self.encode_seconds - encode_before
        result["timings"] = {"load": self.timings["load"], "compile": self.timings["compile"], "encode": encode,
                             "decode": total - encode, "total": total}
        result["impl"] = self.impl
        result["audio_seconds"] = audio_mod.duration(samples)
        return result
