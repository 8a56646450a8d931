"""The Whisper AudioEncoder as one MAX graph, compiled once per process per configuration.

    mel (batch, n_mels, 3000) -> conv1+GELU -> conv2(stride 2)+GELU -> + positional embedding
      -> n_layer x [x + attn(ln(x)); x + mlp(ln(x))] -> ln_post -> (batch, 1500, d_model) float32

On CPU the attention (softmax(q k^T / 8) v per head) is one Mojo kernel, `encoder_attention`
(maxwhisper/kernels/encoder_attention.mojo); on GPU, and with exact products, it is graph ops.
The batch dimension is symbolic. Weights are graph `Weight` nodes bound at load time, so one
compiled graph serves any weights of the same dimensions. The graph also outputs every stage's activations
(the taps, all as (batch, time, channels), the last one the encoder's output): the parity suite compares them
stage by stage, and the production call fetches only the last. One graph for both, not two: each MAX graph
with a matrix product compiles in 40 s or more on 2 cores (docs/suite.md), and the taps cost the call about 1%.
`variants` lists bug classes to inject, each as its own encoder in the graph: only the suite's self-check uses it.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from whisper.model import ModelDimensions

from maxwhisper import exact
from maxwhisper.errors import MaxWhisperError
from maxwhisper.layout import encoder_weights_to_max
from maxwhisper.session import (DEVICES, LN_EPS, as_float32, config_key, get_session, max_device, max_dtype,
                                require_array, stderr_line)

DTYPES = ("float32", "bfloat16", "float16")
# Bug classes that have made public MAX Whisper encoders "run fine but understand nothing", as graph mutants
# (those a wrong weight or input binding expresses exactly, such as a convolution without its shifted taps, a
# missing positional embedding, a wrong attention scale, an untransposed projection or a reshaped mel, the
# self-check injects through the bindings of the encoder graph instead: tests/parity/test_selfcheck.py).
BUGS = ("stride_by_slicing", "tanh_gelu", "no_ln_post",
        # subtle ones, each moving the output by well under 1%: a wrong constant or an approximation
        "ln_eps", "ln_unbiased_var", "mlp_tanh_gelu")
# How many blocks a mutant carrying only these bugs is built with (its taps stop there): the first stage where
# each fails lies within them, which is all the self-check asserts. Less graph: a shorter cold compile
# (twelve mutants at full depth once took 265 s cold on 2 cores; these six, built this deep, 210 s).
BUG_DEPTH = {"stride_by_slicing": 0, "tanh_gelu": 0, "ln_eps": 1, "ln_unbiased_var": 1, "mlp_tanh_gelu": 1}
MATMUL_WEIGHTS = ("qkv.w", "out.w", "fc1.w", "fc2.w")
# the attention kernel's scratch per head (encoder_attention.mojo's HEAD_CAP): up to 1504 frames' keys in tiles
# (1536 rounds them up to tiles of 48), then their values, 64 wide
ATTENTION_HEAD_CAP = (1536 + 1504) * 64
PRODUCT_WEIGHTS = ("conv1.w", "conv2.w", *MATMUL_WEIGHTS)  # split into parts for exact products


@dataclass(frozen=True)
class EncoderConfig:
    dims: ModelDimensions
    device: str = "cpu"
    dtype: str = "float32"
    # One encoder per entry, all in one graph and sharing weights. Only the self-check lists bugs.
    variants: tuple[frozenset[str], ...] = (frozenset(),)
    # float32 products from bfloat16-exact parts (maxwhisper/exact.py), the weights in this many parts:
    # 0 = plain products. get_encoder sets it on GPU, whose float32 products round like TF32.
    weight_parts: int = 0
    # the two convolutions as one matrix product of three shifted copies (im2col); None: on GPU. MAX's GPU
    # convolution ran at 0.04 TFLOP/s on an sm_86 GPU (MAX's own notes, max/pipelines minimax_music3); on an
    # H100 the float32 encoder at batch 1 took 20.2 ms this way against 98.6 ms before (docs/gpu.md)
    conv_as_matmul: bool | None = None
    # self-attention as one Mojo kernel (maxwhisper/kernels/encoder_attention.mojo) instead of two batched
    # products around a softmax of the whole (heads, T, T) scores; None: on CPU, except with exact products,
    # which keep the GPU's graph ops (the kernel is CPU only)
    attention_kernel: bool | None = None

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise MaxWhisperError(f"unknown dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}")
        if self.device not in DEVICES:
            raise MaxWhisperError(f"unknown device {self.device!r}; choose cpu or gpu")
        if unknown := set().union(*self.variants) - set(BUGS):
            raise MaxWhisperError(f"unknown bug classes {sorted(unknown)}; known: {', '.join(BUGS)}")
        if self.conv_as_matmul is None:
            object.__setattr__(self, "conv_as_matmul", self.device == "gpu")
        heads_of_64 = self.dims.n_audio_state == 64 * self.dims.n_audio_head  # every official size
        if self.attention_kernel is None:
            object.__setattr__(self, "attention_kernel", self.device == "cpu" and not self.weight_parts and heads_of_64)
        if self.attention_kernel and (self.device != "cpu" or not heads_of_64):
            raise MaxWhisperError("the encoder's attention kernel takes heads 64 wide, on CPU; "
                                  "use attention_kernel=False here")

    @property
    def key(self) -> tuple:
        return config_key(self)

    @property
    def graph_name(self) -> str:
        bugs = "_".join("+".join(sorted(v)) or "clean" for v in self.variants) if self.variants != (frozenset(),) else ""
        return (f"whisper_encoder_{self.dtype}" + (f"_exact{self.weight_parts}" if self.weight_parts else "")
                + ("_im2col" if self.conv_as_matmul else "") + ("_attnk" if self.attention_kernel else "")
                + (f"_{bugs}" if bugs else ""))

    @property
    def n_frames(self) -> int:
        return 2 * self.dims.n_audio_ctx


def conv1d(x, w, b, stride: int = 1, weight_parts: int = 0):
    """Whisper's Conv1d(k=3, padding=1) on (batch, time, channels) via NHWC conv2d with an RSCF filter
    (with `weight_parts`, the filter's parts joined along output channels: exact.conv1d)."""
    from max.graph import ops
    if weight_parts:
        return exact.conv1d(x, w, b.shape[0], weight_parts, stride) + b
    return ops.squeeze(ops.conv2d(ops.unsqueeze(x, 1), w, stride=(1, stride), padding=(0, 0, 1, 1), bias=b), 1)


def conv1d_as_matmul(x, w, b, stride: int = 1, weight_parts: int = 0):
    """`conv1d` as one matrix product (im2col): the zero-padded input's three shifted copies side by side,
    (batch, time', 3 c_in), times the RSCF filter read as (3 c_in, c_out). The time axis must be static."""
    from max.dtype import DType
    from max.graph import ops
    t, c, n_out = int(x.shape[1]), int(x.shape[2]), int(b.shape[0])
    pad = ops.broadcast_to(ops.constant(0.0, DType.float32, x.device), [x.shape[0], 1, c])
    padded = ops.concat([pad, x, pad], axis=1)  # (batch, time + 2, c_in)
    out = (t - 1) // stride + 1
    cols = ops.concat([padded[:, k:k + stride * (out - 1) + 1:stride, :] for k in range(3)], axis=-1)
    w = ops.reshape(w, [3 * c, -1])
    return (exact.linear(cols, w, n_out, weight_parts) if weight_parts else cols @ w) + b


def kernel_attention(qkv, heads: int):
    """softmax(q k^T / sqrt(64)) v per head for the fused projection qkv (batch, time, 3d): the custom op
    `encoder_attention`, which also hands back its scratch (each head's keys and values as it reads them)."""
    from max.dtype import DType
    from max.graph import TensorType, ops
    b, t, d = qkv.shape[0], qkv.shape[1], int(qkv.shape[2]) // 3
    types = [TensorType(DType.float32, [b, t, d], device=qkv.device),
             TensorType(DType.float32, [b, heads, ATTENTION_HEAD_CAP], device=qkv.device)]
    return ops.custom("encoder_attention", qkv.device, [qkv], types)[0].tensor


def build_graph(cfg: EncoderConfig):
    """Build (not compile) the encoder graph for `cfg`: one encoder per variant, sharing weights."""
    from max.dtype import DType
    from max.graph import DeviceRef, Graph, TensorType, Weight

    cdt = max_dtype(cfg.dtype)
    dev = DeviceRef.GPU() if cfg.device == "gpu" else DeviceRef.CPU()
    shapes, nodes = weight_shapes(cfg.dims, cfg.weight_parts), {}

    def weight(name: str):
        if name not in nodes:
            dtype = cdt if name.endswith(MATMUL_WEIGHTS) else DType.float32
            nodes[name] = Weight(name, dtype, shapes[name], dev)
        return nodes[name]

    mel_type = TensorType(DType.float32, ["batch", cfg.dims.n_mels, cfg.n_frames], device=dev)
    extensions = []
    if cfg.attention_kernel:
        from maxwhisper.gemv import KERNELS_PATH
        extensions = [KERNELS_PATH]
    with Graph(cfg.graph_name, input_types=[mel_type], custom_extensions=extensions) as graph:
        mel = graph.inputs[0].tensor
        outputs = []
        for bugs in cfg.variants:
            outputs += encoder_forward(cfg, mel, weight, bugs)
        graph.output(*outputs)
    return graph


def variant_depth(cfg: EncoderConfig, bugs: frozenset[str]) -> int | None:
    """Blocks built for a mutant with `bugs` (None: the whole encoder, ln_post included)."""
    if bugs and all(b in BUG_DEPTH for b in bugs):
        return max(BUG_DEPTH[b] for b in bugs)
    return None


def variant_output_counts(cfg: EncoderConfig) -> list[int]:
    """How many outputs each variant contributes to the graph, in order."""
    full = cfg.dims.n_audio_layer + 4
    return [full if d is None else 3 + d for d in (variant_depth(cfg, v) for v in cfg.variants)]


def encoder_forward(cfg: EncoderConfig, mel, weight, bugs: frozenset[str] = frozenset()) -> list:
    """The encoder's ops on `mel`; returns the taps (last = output). `weight(name)` gives weight nodes."""
    from max.dtype import DType
    from max.graph import ops

    d, h, cdt = cfg.dims.n_audio_state, cfg.dims.n_audio_head, max_dtype(cfg.dtype)

    def gelu(x, mlp: bool = False):
        tanh = "tanh_gelu" in bugs or (mlp and "mlp_tanh_gelu" in bugs)
        return ops.gelu(x, approximate="tanh" if tanh else "none")

    def ln(x, name: str):
        if "ln_unbiased_var" in bugs:  # variance divided by d - 1, as torch.var's default does
            xc = x - ops.mean(x, -1)
            var = ops.mean(xc * xc, -1) * (d / (d - 1))
            return xc * ops.rsqrt(var + LN_EPS) * weight(name + ".w") + weight(name + ".b")
        return ops.layer_norm(x, weight(name + ".w"), weight(name + ".b"), 1e-4 if "ln_eps" in bugs else LN_EPS)

    def linear(x, name: str):
        w, b = weight(name + ".w"), weight(name + ".b")
        if cfg.weight_parts:
            return exact.linear(x, w, b.shape[0], cfg.weight_parts) + b
        y = ops.matmul(ops.cast(x, cdt), w) if cdt != DType.float32 else x @ w
        return ops.cast(y, DType.float32) + b

    def product(a, b):
        return exact.matmul(a, b, stacked=False) if cfg.weight_parts else a @ b

    # bfloat16 keeps 8 mantissa bits: scores of magnitude ~50 would round by 0.25 and move softmax
    # weights by ~28%, so attention itself stays float32 there (measured: cosine 0.948 vs 0.99999).
    adt = DType.float16 if cfg.dtype == "float16" else DType.float32

    def attention(x, p: str):
        b, t = x.shape[0], x.shape[1]
        if cfg.attention_kernel:
            return linear(kernel_attention(linear(x, p + "qkv"), h), p + "out")
        q, k, v = ops.split(linear(x, p + "qkv"), [d, d, d], axis=-1)
        q, k, v = (ops.permute(ops.reshape(ops.cast(z, adt), [b, t, h, d // h]), [0, 2, 1, 3]) for z in (q, k, v))
        scale = 1.0 / math.sqrt(d // h)
        scores = product(q, ops.transpose(k, 2, 3))
        o = product(ops.softmax(scores * ops.constant(scale, adt, mel.device)), v)
        o = ops.cast(ops.reshape(ops.permute(o, [0, 2, 1, 3]), [b, t, d]), DType.float32)
        return linear(o, p + "out")

    def conv(x, name: str, stride: int):
        if stride == 2 and "stride_by_slicing" in bugs:  # slices the input instead of striding the conv
            x, stride = x[:, ::2, :], 1
        return (conv1d_as_matmul if cfg.conv_as_matmul else conv1d)(
            x, weight(name + ".w"), weight(name + ".b"), stride, cfg.weight_parts)

    taps = []
    x = ops.transpose(mel, 1, 2)  # (batch, frames, n_mels)
    x = gelu(conv(x, "conv1", 1))
    taps.append(x)
    x = gelu(conv(x, "conv2", 2))
    taps.append(x)
    x = x + weight("pos")
    taps.append(x)
    depth = variant_depth(cfg, bugs)
    for i in range(cfg.dims.n_audio_layer if depth is None else depth):
        p = f"blocks.{i}."
        x = x + attention(ln(x, p + "attn_ln"), p)
        x = x + linear(gelu(linear(ln(x, p + "mlp_ln"), p + "fc1"), mlp=True), p + "fc2")
        taps.append(x)
    if depth is not None:
        return taps
    if "no_ln_post" not in bugs:
        x = ln(x, "ln_post")
    taps.append(x)
    return taps


def weight_shapes(dims: ModelDimensions, weight_parts: int = 0) -> dict[str, tuple[int, ...]]:
    """Shape of every weight the graph binds, by name (product weights as `weight_parts` joined parts)."""
    d, m = dims.n_audio_state, dims.n_mels
    shapes = {"conv1.w": (1, 3, m, d), "conv1.b": (d,), "conv2.w": (1, 3, d, d), "conv2.b": (d,),
              "pos": (dims.n_audio_ctx, d), "ln_post.w": (d,), "ln_post.b": (d,)}
    for i in range(dims.n_audio_layer):
        p = f"blocks.{i}."
        shapes.update({p + "qkv.w": (d, 3 * d), p + "qkv.b": (3 * d,), p + "out.w": (d, d), p + "out.b": (d,),
                       p + "fc1.w": (d, 4 * d), p + "fc1.b": (4 * d,), p + "fc2.w": (4 * d, d), p + "fc2.b": (d,),
                       p + "attn_ln.w": (d,), p + "attn_ln.b": (d,), p + "mlp_ln.w": (d,), p + "mlp_ln.b": (d,)})
    if weight_parts:
        shapes.update({k: (*v[:-1], weight_parts * v[-1]) for k, v in shapes.items() if k.endswith(PRODUCT_WEIGHTS)})
    return shapes


def _registry(cfg: EncoderConfig, encoder_weights: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Weights in the graph's names and dtypes (torch tensors: DLPack, bfloat16 included)."""
    wd = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[cfg.dtype]
    out = {}
    for name, arr in encoder_weights_to_max(encoder_weights, cfg.dims.n_audio_layer).items():
        if cfg.weight_parts and name.endswith(PRODUCT_WEIGHTS):
            arr = exact.joined_parts(arr, cfg.weight_parts)
        t = torch.from_numpy(arr)
        out[name] = (t.to(wd) if name.endswith(MATMUL_WEIGHTS) else t).contiguous()
    return out


_MODELS: dict[tuple, "MaxEncoder"] = {}


class MaxEncoder:
    """A compiled MAX encoder with weights bound. Call it with log-mel (batch, n_mels, 3000)."""

    def __init__(self, cfg: EncoderConfig, encoder_weights: dict[str, np.ndarray],
                 progress: Callable[[str], None] | None = None):
        self.cfg = cfg
        self.device = max_device(cfg.device)
        if cfg.dtype == "float16" and cfg.device == "cpu":
            raise MaxWhisperError("--dtype float16 is offered on GPU only; on CPU use --dtype bfloat16 or float32")
        try:
            registry = _registry(cfg, encoder_weights)
        except KeyError as exc:
            raise MaxWhisperError(f"encoder weights lack tensor {exc}; the checkpoint is incomplete") from None
        for name, shape in weight_shapes(cfg.dims, cfg.weight_parts).items():
            if tuple(registry[name].shape) != shape:
                raise MaxWhisperError(f"encoder weight {name} has shape {tuple(registry[name].shape)}, "
                                      f"expected {shape} for these model dimensions")
        (progress or stderr_line)(f"compiling MAX encoder ({_describe(cfg)}); the first compile of a new graph "
                              "takes about 100 s on 2 cores, later ones load from ~/.cache/modular")
        start = time.perf_counter()
        self.model = get_session(cfg.device).load(build_graph(cfg), weights_registry=registry)
        self.compile_s = time.perf_counter() - start

    def check_input(self, mel) -> np.ndarray:
        """Validate log-mel input; return it as a contiguous float32 array."""
        mels, frames = self.cfg.dims.n_mels, self.cfg.n_frames
        shape = tuple(require_array(mel, "mel").shape)
        if len(shape) != 3 or shape[1:] != (mels, frames) or shape[0] < 1:
            hint = ""
            if shape == (mels, frames):
                hint = " (add a batch axis: mel[None])"
            elif len(shape) == 3 and shape[1:] == (frames, mels):
                hint = " (it looks transposed: pass mel.transpose(1, 2))"
            elif len(shape) == 3 and shape[1] != mels and shape[2] == frames:
                hint = f" (this model takes {mels} mel bins)"
            elif len(shape) == 3 and shape[2] != frames:
                hint = " (pad or trim to 30 s with whisper.pad_or_trim)"
            raise MaxWhisperError(f"mel has shape {shape}, expected (batch, {mels}, {frames}){hint}")
        return as_float32(mel, "mel", "a floating-point log-mel spectrogram", "check the audio decoding and log-mel step")

    def run(self, mel) -> list[np.ndarray]:
        """All graph outputs, the taps, as float32 numpy arrays (the last: the encoder's output)."""
        return self._execute(self.check_input(mel))

    def _execute(self, mel: np.ndarray, last_only: bool = False) -> list[np.ndarray]:
        """`run` on a log-mel that check_input already returned (`last_only`: only the output reaches the host)."""
        from max.driver import CPU, Buffer
        buf = Buffer.from_numpy(mel)
        if self.cfg.device == "gpu":
            buf = buf.to(self.device)
        outs = self.model.execute(buf)[-1:] if last_only else self.model.execute(buf)
        return [o.to(CPU()).to_numpy() if self.cfg.device == "gpu" else o.to_numpy() for o in outs]

    def run_variants(self, mel) -> list[list[np.ndarray]]:
        """Outputs grouped per variant (each group: that variant's taps)."""
        outs, groups = self.run(mel), []
        for n in variant_output_counts(self.cfg):
            groups.append(outs[:n])
            outs = outs[n:]
        return groups

    def __call__(self, mel) -> np.ndarray:
        """Encoder output (batch, n_ctx, d_model) float32."""
        mel = self.check_input(mel)
        out = self._execute(mel, last_only=True)[-1]
        if not np.isfinite(out).all():  # finite input that overflowed: never hand NaN features to a decoder
            raise MaxWhisperError(f"the encoder's output overflowed to NaN or Inf: the mel reaches "
                                  f"{float(np.abs(mel).max()):.3g}, where a log-mel spectrogram lies "
                                  "within about [-1.5, 2.5]; compute it with maxwhisper.audio.log_mel")
        return out


def _describe(cfg: EncoderConfig) -> str:
    dims = cfg.dims
    extra = f", {len(cfg.variants)} variants" if len(cfg.variants) > 1 else ""
    return f"d={dims.n_audio_state} layers={dims.n_audio_layer} mels={dims.n_mels}, {cfg.device}, {cfg.dtype}{extra}"


def get_encoder(loaded, device: str = "cpu", dtype: str = "float32",
                variants=(frozenset(),), progress: Callable[[str], None] | None = None,
                exact_products: bool | None = None, conv_as_matmul: bool | None = None,
                attention_kernel: bool | None = None) -> MaxEncoder:
    """The process-wide compiled encoder for these weights and settings (compiled on first use).
    `exact_products` None: on GPU in float32 (exact.py; True also runs them on CPU, for the suite).
    `conv_as_matmul` None: on GPU (EncoderConfig; True also on CPU, for the suite).
    `attention_kernel` None: on CPU without exact products (EncoderConfig; False: the graph's attention)."""
    parts = 0
    if exact.wanted(exact_products, device, dtype):
        if dtype != "float32":
            raise MaxWhisperError(f"exact products are float32's; this encoder computes in {dtype}")
        parts = exact.parts_for(
            loaded.encoder_sha256, lambda: encoder_weights_to_max(loaded.encoder_weights(), loaded.dims.n_audio_layer),
            PRODUCT_WEIGHTS)
    cfg = EncoderConfig(loaded.dims, device, dtype, tuple(frozenset(v) for v in variants), parts, conv_as_matmul,
                        attention_kernel)
    key = (cfg.key, loaded.encoder_sha256)
    if key not in _MODELS:
        _MODELS[key] = MaxEncoder(cfg, loaded.encoder_weights(), progress)
    return _MODELS[key]


def release(encoder_sha256: str) -> None:
    """Drop this process's compiled encoders of these weights (as decoder.release does for decoders)."""
    for key in [key for key in _MODELS if key[1] == encoder_sha256]:
        del _MODELS[key]


class MaxAudioEncoder(torch.nn.Module):
    """Drop-in replacement for `whisper.model.AudioEncoder` that runs the MAX encoder."""

    def __init__(self, encoder: MaxEncoder, reuse_last: bool = True):
        super().__init__()
        self.encoder = encoder
        self.seconds = 0.0  # time spent encoding, for the pipelines' timings
        # reuse_last: the same log-mel as the last call returns its features again. openai-whisper encodes a
        # window again for every fallback temperature it tries and for word alignment (DecodingTask and
        # find_alignment each ask for the features); a benchmark of the encoder itself turns it off
        self.reuse_last = reuse_last
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    def forget_last(self) -> None:
        """Drop the last window's features (a new transcription starts)."""
        self._last = None

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        last = self._last
        # torch.equal is False on another shape; another device would raise, so that is checked first
        if self.reuse_last and last is not None and last[0].device == mel.device and torch.equal(last[0], mel):
            out = last[1].clone()
        else:
            out = torch.from_numpy(self.encoder(mel)).to(mel.device)
            if self.reuse_last:
                self._last = (mel.detach().clone(), out.clone())
        self.seconds += time.perf_counter() - start
        return out.to(mel.dtype) if mel.dtype in (torch.float16, torch.bfloat16) else out


def conv_stem_graph(device: str = "cpu"):
    """The encoder's convolution alone, every dimension symbolic, at stride 1 and 2 (one compile).

    Inputs: x (batch, time, c_in), filter RSCF (1, 3, c_in, c_out), bias (c_out,).
    Outputs: conv1d(k=3, padding=1) at stride 1 and at stride 2, as (batch, time', c_out).
    Guards the upstream CPU conv2d bugs at boundary rows, odd lengths and channel counts. On GPU it is
    exact.conv1d (the filter split into its parts in the graph): MAX's conv2d with float32's precision,
    which the GPU encoder itself no longer uses (its convolutions are matrix products, `conv1d_as_matmul`)."""
    from max.dtype import DType
    from max.graph import DeviceRef, Graph, TensorType
    dev = DeviceRef.GPU() if device == "gpu" else DeviceRef.CPU()
    types = [TensorType(DType.float32, ["batch", "time", "c_in"], dev),
             TensorType(DType.float32, [1, 3, "c_in", "c_out"], dev), TensorType(DType.float32, ["c_out"], dev)]
    with Graph("conv_stem", input_types=types) as graph:
        x, w, b = (v.tensor for v in graph.inputs)
        parts = exact.PARTS if device == "gpu" else 0
        if parts:
            from max.graph import ops
            w = ops.concat(exact.split(w), axis=-1)
        graph.output(conv1d(x, w, b, 1, parts), conv1d(x, w, b, 2, parts))
    return graph


def load_conv_stem(device: str = "cpu"):
    """Compiled `conv_stem_graph`; call model.execute(x, filter, bias) with max.driver Buffers."""
    return get_session(device).load(conv_stem_graph(device))
