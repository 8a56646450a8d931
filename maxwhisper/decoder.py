"""Whisper's TextDecoder as two MAX graphs with a key/value cache, compiled once per process.

    cross graph  features (audio, n_audio_ctx, d) -> every layer's cross keys (layers * audio, h, dh, ctx) and
                 values (layers * audio, h, ctx, dh), stacked; run once per audio window.
    step graph   tokens (batch, new), positions (new,), causal mask among the new tokens (new, new), the
                 rows to return logits for (rows,), `past` (1,): the count of cached tokens, each layer's
                 self-attention keys/values as buffers of the whole context (batch, h, n_text_ctx, dh),
                 cross keys/values per audio window (fused) or per row
      -> token + positional embedding -> n_layer x [x + self_attn(ln(x)); x + cross_attn(ln(x)); x + mlp(ln(x))]
      -> ln -> logits against the tied token embedding at the rows asked for (batch, rows, n_vocab)
      also returns every block's output (the taps). The step writes the new tokens' keys and values into
      the buffers at rows past .. past + new - 1, in place, and attends to rows up to those.

`batch`, `new` and `rows` are symbolic, `past` a value: one compiled step graph serves the prompt prefill and
single-token steps, greedy (batch 1), best-of and beam search (batch n) alike. Rows of one audio window
(a beam or best-of group) get that window's cross keys and values. Weights are `Weight` nodes bound at
load time, as in the encoder.

On CPU (`fused`, the default there) the step after the embeddings is one custom Mojo op, `decoder_block`
(maxwhisper/kernels): the blocks, over caches, cross keys/values and packed weights stacked layer after
layer, the final LayerNorm, and the logits product as `gemv_nt` sums it, streaming the embedding's
(n_vocab, d) rows packed in panels of four (`gemv.panels`): a step is memory-bound and small, and a graph
of ~100 small ops spent most of its time dispatching them. Elsewhere the blocks are plain graph ops and
the logits product reads the embedding stored pre-transposed, (d, n_vocab). On GPU the float32 products
are exact.py's (parts that TF32 holds exactly), and a single-token step can replay a captured device graph
(`CapturedStep`, MAXWHISPER_CAPTURE=1): its shapes never change, since the caches span the whole context.
On an NVIDIA GPU the step is by default (`fused`) the same op as `decoder_warps` (kernels/decoder_warps.mojo):
38 warp kernels a step for tiny.en, float32 on CUDA cores, so the step needs no exact products; the cross
graph's projection, graph ops, still takes them (`CROSS_PRODUCTS`); `fused=False` gives the graph ops there.
`warps=True` on CPU runs the kernels' lane-by-lane emulation, which the suite checks against PyTorch.

The fused kernels read their weights in half (`storage="float16"`) when every decoder weight is
half-representable, as in Whisper's own checkpoints: the kernels widen each value as they load it, so the
arithmetic and the logits are float32's, bit for bit, while a step streams half the bytes. Other weights
(fine-tuned in float32, seeded random ones) keep float32 storage.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from whisper.model import ModelDimensions

from maxwhisper import exact
from maxwhisper.session import (DEVICES, LN_EPS, as_float32, config_key, get_session, max_device, max_dtype,
                                require_array, stderr_line)
from maxwhisper.stages import decoder_tap_names
from maxwhisper.errors import MaxWhisperError, reason
from maxwhisper.layout import decoder_weights_to_max

# Bugs that typically break decoder ports. The self-check injects them where they would live: in the
# host-side cache handling or in the weight layout (the compiled graphs stay the same: no extra compile).
BUGS = ("no_causal_mask", "cache_off_by_one", "pos_offset_reset", "stale_cross_window", "kv_swapped",
        "untied_logits")
WEIGHT_BUGS = frozenset({"kv_swapped", "untied_logits"})


def capture_setting() -> bool:
    """MAXWHISPER_CAPTURE: 1 replays single-token GPU steps from a captured graph, 0 or unset runs them eagerly."""
    value = os.environ.get("MAXWHISPER_CAPTURE", "").strip()
    if value not in ("", "0", "1"):
        raise MaxWhisperError(f"MAXWHISPER_CAPTURE={value!r}: set it to 1 (capture GPU steps) or 0 (run them eagerly)")
    return value == "1"


def wait_setting() -> bool:
    """MAXWHISPER_STEP_WAIT: how a replayed step waits for its logits' copy back. `sync` (the default) calls the
    device's synchronize; `spin` records an event behind the copy and polls it, the host spinning meanwhile
    (for the next GPU lease to time against sync: the 207 KB copy took 0.031-0.036 ms where the transfer needs
    about 4 us, docs/gpu.md). True for spin."""
    value = os.environ.get("MAXWHISPER_STEP_WAIT", "").strip()
    if value not in ("", "sync", "spin"):
        raise MaxWhisperError(f"MAXWHISPER_STEP_WAIT={value!r}: set it to sync (the default: synchronize the "
                              "device) or spin (poll an event)")
    return value == "spin"


@dataclass(frozen=True)
class DecoderConfig:
    dims: ModelDimensions
    device: str = "cpu"
    dtype: str = "float32"  # of the logits weights; everything else computes in float32
    bugs: frozenset[str] = frozenset()  # only the suite's self-check injects any
    fused: bool | None = None  # the step as one custom op (CPU: decoder_block; GPU: decoder_warps); None: on CPU
    # in float32 (get_decoder also picks it on an NVIDIA GPU)
    # the fused step as decoder_warps's GPU kernels: on GPU whenever fused, on CPU their emulation (the suite's)
    warps: bool = False
    storage: str = "float32"  # of the fused kernels' weights: float16 only for half-representable weights
    # float32 products from bfloat16-exact parts (maxwhisper/exact.py), the weights in this many parts:
    # 0 = plain products. get_decoder sets it on GPU, whose float32 products round like TF32.
    weight_parts: int = 0
    # the graph-op step also outputs each layer's cross-attention scores, before the softmax, (batch, h, new, ctx):
    # what openai-whisper's word alignment reads from its decoder (inference.MaxTextDecoder)
    cross_qk: bool = False

    def __post_init__(self):
        if self.device not in DEVICES:
            raise MaxWhisperError(f"unknown device {self.device!r}; choose cpu or gpu")
        if self.fused is None:
            object.__setattr__(self, "fused", self.device == "cpu" and self.dtype == "float32")
        if self.fused and self.device == "gpu":
            object.__setattr__(self, "warps", True)
        if self.fused and self.dtype != "float32":
            raise MaxWhisperError("the fused decoder kernels compute in float32; use fused=False for "
                                  f"{self.dtype}")
        if self.cross_qk and self.fused:
            raise MaxWhisperError("the cross-attention scores are the graph-op step's output; pass fused=False")
        if self.warps and not self.fused:
            raise MaxWhisperError("the warp kernels are the fused step's; pass fused=True with warps")
        if self.storage not in ("float32", "float16") or (self.storage == "float16" and not self.fused):
            raise MaxWhisperError(f"weight storage {self.storage!r}: float32, or float16 with the fused kernels")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise MaxWhisperError(f"unknown decoder dtype {self.dtype!r}; choose float32, bfloat16 or float16")
        if unknown := set(self.bugs) - set(BUGS):
            raise MaxWhisperError(f"unknown decoder bug classes {sorted(unknown)}; known: {', '.join(BUGS)}")

    @property
    def key(self) -> tuple:
        return config_key(self)

    @property
    def head_dim(self) -> int:
        return self.dims.n_text_state // self.dims.n_text_head


PRODUCT_WEIGHTS = ("qkv.w", "out.w", "cross_q.w", "cross_kv.w", "cross_out.w", "fc1.w", "fc2.w", "logits.w")
CROSS_PRODUCTS = ("cross_kv.w",)  # the fused step's only graph-op product: the cross graph's projection


def graph_products(fused: bool) -> tuple[str, ...]:
    """The product weights that graph ops multiply (exact products join their parts): with the fused step,
    the cross graph's alone (the kernels read the rest packed, in their own float32 arithmetic)."""
    return CROSS_PRODUCTS if fused else PRODUCT_WEIGHTS


def weight_shapes(dims: ModelDimensions, fused: bool = False, weight_parts: int = 0) -> dict[str, tuple[int, ...]]:
    """Shape of every weight the two graphs bind, by name (`fused`: blocks packed, the logits' (n_vocab, d)
    in gemv_nt's panels; `weight_parts`: product weights as that many parts joined along columns)."""
    shapes = _shapes(dims)
    if weight_parts:
        shapes.update({k: (v[0], weight_parts * v[1]) for k, v in shapes.items() if k.endswith(graph_products(fused))})
    if fused:
        from maxwhisper.fused import PACKED, packed_size
        from maxwhisper.gemv import panels_size
        packed = {name.split(".")[0] for name in PACKED}  # read packed, one vector per block
        shapes = {k: v for k, v in shapes.items() if not (k.startswith("blocks.") and k.split(".")[2] in packed)}
        shapes["logits.w"] = (panels_size(dims.n_vocab, dims.n_text_state),)
        shapes["blocks.packed"] = (dims.n_text_layer * packed_size(dims.n_text_state),)  # every block's, in order
    return shapes


def _shapes(dims: ModelDimensions) -> dict[str, tuple[int, ...]]:
    d, v = dims.n_text_state, dims.n_vocab
    shapes = {"tok_emb": (v, d), "logits.w": (d, v), "pos": (dims.n_text_ctx, d), "ln.w": (d,), "ln.b": (d,)}
    for i in range(dims.n_text_layer):
        p = f"blocks.{i}."
        shapes.update({p + "qkv.w": (d, 3 * d), p + "qkv.b": (3 * d,), p + "out.w": (d, d), p + "out.b": (d,),
                       p + "cross_q.w": (d, d), p + "cross_q.b": (d,), p + "cross_kv.w": (d, 2 * d),
                       p + "cross_kv.b": (2 * d,), p + "cross_out.w": (d, d), p + "cross_out.b": (d,),
                       p + "fc1.w": (d, 4 * d), p + "fc1.b": (4 * d,), p + "fc2.w": (4 * d, d), p + "fc2.b": (d,)})
        for ln in ("attn_ln", "cross_ln", "mlp_ln"):
            shapes.update({f"{p}{ln}.w": (d,), f"{p}{ln}.b": (d,)})
    return shapes


def half_exact(weights: dict[str, np.ndarray]) -> bool:
    """Whether every weight survives a round trip through float16 unchanged (Whisper's checkpoints do)."""
    return all(np.array_equal(w.astype(np.float16).astype(w.dtype), w) for w in weights.values())


def _stored(cfg: DecoderConfig, name: str) -> str:
    """The dtype weight `name` is bound in."""
    if cfg.fused and (name == "logits.w" or name.endswith(".packed")):
        return cfg.storage
    return cfg.dtype if name == "logits.w" else "float32"


def _graph_weights(cfg: DecoderConfig, dev):
    """A function name -> Weight node, creating each node once."""
    from max.graph import Weight
    shapes, nodes = weight_shapes(cfg.dims, cfg.fused, cfg.weight_parts), {}

    def weight(name: str):
        if name not in nodes:
            dtype = max_dtype(_stored(cfg, name))
            nodes[name] = Weight(name, dtype, shapes[name], dev)
        return nodes[name]
    return weight


def _linear(x, weight, name: str, weight_parts: int = 0):
    w, b = weight(name + ".w"), weight(name + ".b")
    if weight_parts:
        return exact.linear(x, w, b.shape[0], weight_parts) + b
    return x @ w + b


def _exact_suffix(cfg: DecoderConfig) -> str:
    return f"_exact{cfg.weight_parts}" if cfg.weight_parts else ""


def build_cross_graph(cfg: DecoderConfig):
    """features (audio, ctx, d) -> [k, v], every layer's stacked along the windows' axis: k as (layers * audio, h,
    dh, ctx), v as (layers * audio, h, ctx, dh). One graph for every step kind, so on the CPU a process compiles it once
    (the graph-op step takes each layer's slice, MaxDecoder.cross; on a GPU the exact products' parts may differ)."""
    from max.dtype import DType
    from max.graph import DeviceRef, Graph, TensorType, ops
    dims, dh = cfg.dims, cfg.head_dim
    d, h = dims.n_text_state, dims.n_text_head
    dev = DeviceRef.GPU() if cfg.device == "gpu" else DeviceRef.CPU()
    weight = _graph_weights(cfg, dev)
    xa_type = TensorType(DType.float32, ["audio", dims.n_audio_ctx, d], device=dev)
    with Graph(f"whisper_decoder_cross_{cfg.dtype}" + _exact_suffix(cfg), input_types=[xa_type]) as graph:
        xa = graph.inputs[0].tensor
        a, t = xa.shape[0], xa.shape[1]
        outs = []
        for i in range(dims.n_text_layer):
            k, v = ops.split(_linear(xa, weight, f"blocks.{i}.cross_kv", cfg.weight_parts), [d, d], axis=-1)
            outs.append(ops.permute(ops.reshape(k, [a, t, h, dh]), [0, 2, 3, 1]))
            outs.append(ops.permute(ops.reshape(v, [a, t, h, dh]), [0, 2, 1, 3]))
        graph.output(ops.concat(outs[0::2], axis=0), ops.concat(outs[1::2], axis=0))
    return graph


def build_step_graph(cfg: DecoderConfig):
    """One decoder pass over `new` tokens per row, given the cache of `past` tokens (see module docstring)."""
    from max.dtype import DType
    from max.graph import BufferType, DeviceRef, Graph, TensorType, ops
    dims, dh = cfg.dims, cfg.head_dim
    d, h, n_layer, ctx, n_ctx = dims.n_text_state, dims.n_text_head, dims.n_text_layer, dims.n_audio_ctx, dims.n_text_ctx
    dev = DeviceRef.GPU() if cfg.device == "gpu" else DeviceRef.CPU()
    weight = _graph_weights(cfg, dev)
    types = [TensorType(DType.int64, ["batch", "new"], device=dev),
             TensorType(DType.int64, ["new"], device=dev),
             TensorType(DType.float32, ["new", "new"], device=dev),
             TensorType(DType.int64, ["rows"], device=dev),
             # the count of cached tokens, then each layer's keys and values for the whole context, written in place
             TensorType(DType.int64, [1], device=dev)]
    if cfg.fused:  # every layer's stacked, (layers * batch, ...); cross per audio window (the kernel maps rows)
        types += [BufferType(DType.float32, ["layer_rows", h, n_ctx, dh], device=dev)] * 2
        types += [TensorType(DType.float32, ["layer_windows", h, dh, ctx], device=dev),
                  TensorType(DType.float32, ["layer_windows", h, ctx, dh], device=dev)]
    else:  # per layer; cross per row
        types += [BufferType(DType.float32, ["batch", h, n_ctx, dh], device=dev)] * (2 * n_layer)
        types += [TensorType(DType.float32, ["batch", h, dh, ctx], device=dev),
                  TensorType(DType.float32, ["batch", h, ctx, dh], device=dev)] * n_layer
    from maxwhisper.fused import KERNELS_PATH, decoder_block
    name = (f"whisper_decoder_step_{cfg.dtype}" + (f"_fused_{cfg.storage}" if cfg.fused else "_static")
            + ("_warps" if cfg.warps else "") + ("" if cfg.fused else _exact_suffix(cfg))  # fused: no graph products
            + ("_qk" if cfg.cross_qk else ""))
    with Graph(name, input_types=types, custom_extensions=[KERNELS_PATH] if cfg.fused else []) as graph:
        tokens, positions, causal, rows, past = (v.tensor for v in graph.inputs[:5])
        n_caches = 2 if cfg.fused else 2 * n_layer
        caches = [v.buffer for v in graph.inputs[5:5 + n_caches]]
        cross = [v.tensor for v in graph.inputs[5 + n_caches:]]
        b, t = tokens.shape
        scale = 1.0 / math.sqrt(dh)
        if not cfg.fused:
            # key j of the whole context: cached (j < past) is visible, new (past <= j < past + new) as the causal
            # mask among the new tokens says, unwritten (later) never: (new, n_ctx)
            key = ops.range(0, n_ctx, 1, out_dim=n_ctx, dtype=DType.int64, device=dev) - past
            last = ops.max(ops.range(0, t, 1, out_dim=t, dtype=DType.int64, device=dev), axis=0)  # new - 1
            new_row = ops.min(ops.max(key, ops.constant(0, DType.int64, dev)), last)  # which new token, if new
            is_new = ops.logical_and(ops.greater_equal(key, ops.constant(0, DType.int64, dev)),
                                     ops.greater_equal(last, key))
            zero, never = (ops.constant(v, DType.float32, dev) for v in (0.0, float("-inf")))
            mask = ops.where(ops.greater(ops.constant(0, DType.int64, dev), key), zero,
                             ops.where(is_new, ops.gather(causal, new_row, axis=1), never))
            is_new = ops.reshape(is_new, [1, 1, n_ctx, 1])

        def ln(x, name):
            return ops.layer_norm(x, weight(name + ".w"), weight(name + ".b"), LN_EPS)

        def linear(x, name):
            return _linear(x, weight, name, cfg.weight_parts)

        def product(x, y):
            return exact.matmul(x, y) if cfg.weight_parts else x @ y

        def heads(z):  # (b, t, d) -> (b, h, t, dh)
            return ops.permute(ops.reshape(z, [b, t, h, dh]), [0, 2, 1, 3])

        def merge(o):  # (b, h, t, dh) -> (b, t, d)
            return ops.reshape(ops.permute(o, [0, 2, 1, 3]), [b, t, d])

        def written(cache, rows_new):  # the new rows stored at `past` onwards; the whole context back
            # elementwise and a gather, with `past` read on the device: a captured graph replays it unchanged
            full = ops.where(is_new, ops.gather(rows_new, new_row, axis=2), ops.buffer_load(cache))
            ops.buffer_store(cache, full)
            return full

        def self_attention(x, i):
            q, k, v = ops.split(linear(x, f"blocks.{i}.qkv"), [d, d, d], axis=-1)
            k, v = written(caches[2 * i], heads(k)), written(caches[2 * i + 1], heads(v))
            scores = product(heads(q), ops.transpose(k, 2, 3)) * scale + mask
            return linear(merge(product(ops.softmax(scores), v)), f"blocks.{i}.out")

        scores = []  # each layer's cross-attention scores (cfg.cross_qk)

        def cross_attention(x, i):
            q = heads(linear(x, f"blocks.{i}.cross_q"))
            scores.append(product(q, cross[2 * i]) * scale)
            o = product(ops.softmax(scores[-1]), cross[2 * i + 1])
            return linear(merge(o), f"blocks.{i}.cross_out")

        def block(x, i):  # one decoder block
            blk = f"blocks.{i}."
            x = x + self_attention(ln(x, blk + "attn_ln"), i)
            x = x + cross_attention(ln(x, blk + "cross_ln"), i)
            return x + linear(ops.gelu(linear(ln(x, blk + "mlp_ln"), blk + "fc1")), blk + "fc2")

        x = ops.gather(weight("tok_emb"), tokens, axis=0) + ops.gather(weight("pos"), positions, axis=0)
        taps = [x]
        if cfg.fused:  # the whole step in one custom op, over (batch * new) rows: blocks, LayerNorm, logits
            ys, logits, x = decoder_block(ops.reshape(x, [b * t, d]), causal, past, *caches, *cross,
                                          weight("blocks.packed"), rows, weight("ln.w"), weight("ln.b"),
                                          weight("logits.w"), dims.n_vocab, b, warps=cfg.warps)
            ys = ops.reshape(ys, [n_layer, b, t, d])
            taps += [ys[i] for i in range(n_layer)] + [ops.reshape(x, [b, t, d])]
            graph.output(ops.reshape(logits, [b, rows.shape[0], dims.n_vocab]), *taps)
            return graph
        for i in range(n_layer):
            x = block(x, i)
            taps.append(x)
        x = ln(x, "ln")
        taps.append(x)
        x = ops.gather(x, rows, axis=1)  # logits only for the rows asked for
        logits_w = weight("logits.w")
        if cfg.weight_parts:
            logits = exact.linear(x, logits_w, dims.n_vocab, cfg.weight_parts)
        elif cfg.dtype == "float32":
            logits = x @ logits_w
        else:
            logits = ops.cast(ops.cast(x, logits_w.dtype) @ logits_w, DType.float32)
        graph.output(logits, *taps, *(scores if cfg.cross_qk else []))
    return graph


def _inject_weight_bugs(w: dict[str, np.ndarray], cfg: DecoderConfig) -> dict[str, np.ndarray]:
    d = cfg.dims.n_text_state
    if "kv_swapped" in cfg.bugs:  # self-attention keys and values trade places
        for i in range(cfg.dims.n_text_layer):
            for name in (f"blocks.{i}.qkv.w", f"blocks.{i}.qkv.b"):
                q, k, v = np.split(w[name], 3, axis=-1)
                w[name] = np.ascontiguousarray(np.concatenate([q, v, k], axis=-1))
    if "untied_logits" in cfg.bugs:  # the output projection reshaped, not transposed, from the embedding
        w["logits.w"] = np.ascontiguousarray(w["tok_emb"].reshape(d, -1))
    return w


def _registry(cfg: DecoderConfig, decoder_weights: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    w = _inject_weight_bugs(decoder_weights_to_max(decoder_weights, cfg.dims.n_text_layer), cfg)
    if cfg.weight_parts:
        w.update({k: exact.joined_parts(v, cfg.weight_parts) for k, v in w.items()
                  if k.endswith(graph_products(cfg.fused))})
    if cfg.fused:
        from maxwhisper.fused import pack_block
        # float32: stored below, in cfg.storage
        w["blocks.packed"] = np.concatenate([pack_block(w, f"blocks.{i}.") for i in range(cfg.dims.n_text_layer)])
        from maxwhisper.gemv import panels
        w["logits.w"] = panels(w["logits.w"].T)
    shapes, registry = weight_shapes(cfg.dims, cfg.fused, cfg.weight_parts), {}
    for name in shapes:
        given = torch.from_numpy(w[name])
        registry[name] = stored = given.to(getattr(torch, _stored(cfg, name))).contiguous()
        # half storage must never round a weight (a float16 `dtype` off the fused path is a chosen rounding)
        if cfg.storage == "float16" and stored.dtype == torch.float16 and not torch.equal(stored.float(), given):
            raise MaxWhisperError("decoder weights are not all half-representable; use storage='float32'")
    return registry


class MaxDecoder:
    """The compiled cross and step graphs with weights bound. See `DecoderState` for running them."""

    def __init__(self, cfg: DecoderConfig, decoder_weights: dict[str, np.ndarray],
                 progress: Callable[[str], None] | None = None):
        self.cfg = cfg
        captures = capture_setting()  # a bad MAXWHISPER_CAPTURE fails here, before any compile
        wait_setting()  # and a bad MAXWHISPER_STEP_WAIT
        self.device = max_device(cfg.device)
        if cfg.warps and cfg.device == "gpu" and self.device.api != "cuda":
            raise MaxWhisperError(f"the warp kernels assume NVIDIA's 32-lane warps and this GPU's API is "
                                  f"{self.device.api}; use fused=False (graph ops)")
        try:
            registry = _registry(cfg, decoder_weights)
        except KeyError as exc:
            raise MaxWhisperError(f"decoder weights lack tensor {exc}; the checkpoint is incomplete") from None
        for name, shape in weight_shapes(cfg.dims, cfg.fused, cfg.weight_parts).items():
            if tuple(registry[name].shape) != shape:
                raise MaxWhisperError(f"decoder weight {name} has shape {tuple(registry[name].shape)}, "
                                      f"expected {shape} for these model dimensions")
        dims, self.progress = cfg.dims, progress or stderr_line
        self.progress(f"compiling MAX decoder (d={dims.n_text_state} layers={dims.n_text_layer} "
                              f"vocab={dims.n_vocab}, {cfg.device}, {cfg.dtype}"
                              + (f", {cfg.storage} weights" if cfg.fused else "")
                              + (", the word alignment's cross-attention scores" if cfg.cross_qk else "")
                              + "); the first compile takes a few "
                              "minutes on 2 cores, later ones load from ~/.cache/modular")
        start = time.perf_counter()
        session = get_session(cfg.device)
        self.cross_model = session.load(build_cross_graph(cfg), weights_registry=registry)
        self.step_model = session.load(build_step_graph(cfg), weights_registry=registry)
        self.compile_s = time.perf_counter() - start
        # MAXWHISPER_CAPTURE=1: single-token steps on GPU replay a captured device graph (CapturedStep). On an
        # H100 (2026-11-27) replays equalled eager steps bit for bit and took a batch-1 step from 2.66 to 1.88 ms,
        # but once a graph is captured MAX held about 70 GB of the card's 80 (NVML; eager: 1.3 GB), so it is
        # opt-in. A runtime that cannot capture runs the steps eagerly (capture_error says why)
        self.captures = cfg.device == "gpu" and captures
        # batch -> why its capture failed: later states of that batch step eagerly without trying (or saying) it
        # again; another batch (a beam group, say) still tries, since a capture can fail for one size alone
        self.capture_refused: dict[int, str] = {}
        # the last window's features and their cross keys/values, for `cross(..., reuse_last=True)`
        self._last_cross: tuple[np.ndarray, list] | None = None

    @property
    def capture_error(self) -> str | None:
        """Why the last capture that failed did (capture_refused's latest entry), or None."""
        return next(reversed(self.capture_refused.values()), None)

    def mutant(self, bugs: frozenset[str], decoder_weights: dict[str, np.ndarray]) -> "MaxDecoder":
        """This decoder with `bugs` injected (the self-check). Host-side bugs share the compiled models;
        weight-layout bugs rebind the step graph (a load from MAX's cache, no new compile)."""
        import copy
        mutant = copy.copy(self)
        mutant.cfg = dataclasses.replace(self.cfg, bugs=frozenset(bugs))
        mutant._last_cross = None
        if mutant.cfg.bugs & WEIGHT_BUGS:
            registry = _registry(mutant.cfg, decoder_weights)
            mutant.step_model = get_session(self.cfg.device).load(build_step_graph(mutant.cfg), weights_registry=registry)
        return mutant

    def _to_device(self, array: np.ndarray):
        from max.driver import Buffer
        buf = Buffer.from_numpy(np.ascontiguousarray(array))
        return buf.to(self.device) if self.cfg.device == "gpu" else buf

    def _to_numpy(self, buf) -> np.ndarray:
        from max.driver import CPU
        return buf.to(CPU()).to_numpy() if self.cfg.device == "gpu" else buf.to_numpy()

    def check_features(self, features) -> np.ndarray:
        dims = self.cfg.dims
        expected = (dims.n_audio_ctx, dims.n_audio_state)
        shape = tuple(require_array(features, "audio features").shape)
        if len(shape) != 3 or shape[1:] != expected or shape[0] < 1:
            hint = " (add a batch axis: features[None])" if shape == expected else ""
            raise MaxWhisperError(f"audio features have shape {shape}, expected (batch, {expected[0]}, "
                                  f"{expected[1]}) from this model's encoder{hint}")
        return as_float32(features, "audio features", "the encoder's float features", "check the encoder's output")

    def cross(self, features, reuse_last: bool = False) -> list:
        """Cross-attention keys and values of each layer for these audio features (device buffers, which states
        only read). reuse_last: features equal to the last such call's reuse its keys and values, as
        openai-whisper's temperature fallback decodes a window again through a new task and state."""
        features = self.check_features(features)
        last = self._last_cross
        if reuse_last and last is not None and np.array_equal(last[0], features):  # False on another shape
            kv = last[1]
        else:
            kv = list(self.cross_model.execute(self._to_device(features)))
            if not self.cfg.fused:  # per layer, as the graph-op step takes them: k_0, v_0, k_1, v_1, ... (views)
                n, a = self.cfg.dims.n_text_layer, int(kv[0].shape[0]) // self.cfg.dims.n_text_layer
                kv = [part[i * a:(i + 1) * a, :, :, :] for i in range(n) for part in kv]
            self._last_cross = (features.copy(), kv) if reuse_last else None
        if "stale_cross_window" in self.cfg.bugs:  # keeps attending to the first window it saw
            self.__dict__.setdefault("_first_cross", kv)
            return self._first_cross
        return kv

    def new_state(self, features, group: int = 1, reuse_cross: bool = False) -> "DecoderState":
        """An empty cache for `group` token rows per audio window of `features` (reuse_cross: see `cross`)."""
        if not isinstance(group, (int, np.integer)) or group < 1:
            raise MaxWhisperError(f"empty batch: {group!r} token rows per audio window; pass a whole number of at least one")
        if self.cfg.warps:
            from maxwhisper.fused import warps_settings
            warps_settings()  # a bad MAXWHISPER_WARPS_BLOCK, _PREFETCH or _PDL fails here, not inside the op
        return DecoderState(self, self.cross(features, reuse_cross), group)

    def forget_last(self) -> None:
        """Drop the last window's cross keys/values (a new transcription starts)."""
        self._last_cross = None


class DecoderState:
    """The caches of one decode: cross keys/values per audio window (per row off the fused path), and each
    layer's self-attention keys/values for the whole context, written in place by every step."""

    def __init__(self, decoder: MaxDecoder, cross: list, group: int):
        self.decoder, self.group = decoder, group
        self.n_audio = int(cross[0].shape[0]) // (decoder.cfg.dims.n_text_layer if decoder.cfg.fused else 1)
        self.window_cross = cross  # per audio window
        if group > 1 and not decoder.cfg.fused:  # each row of a group attends to its window's keys and values
            cross = [decoder._to_device(np.repeat(decoder._to_numpy(c), group, axis=0)) for c in cross]
        self.cross = cross  # as the step graph takes them: per window (fused) or per row
        self.length = 0  # tokens decoded: the next token's position
        self.filled = 0  # tokens the self-attention cache holds (fewer only under the cache_off_by_one bug)
        dims, dh = decoder.cfg.dims, decoder.cfg.head_dim
        shape = (self.batch, dims.n_text_head, dims.n_text_ctx, dh)
        stacked = (dims.n_text_layer * self.batch, *shape[1:])  # fused: keys and values, every layer's stacked
        if decoder.cfg.fused and decoder.cfg.device == "cpu":  # host buffers viewing numpy arrays (unwritten
            # rows are never read by the fused kernels)
            stacks = [np.empty(stacked, np.float32) for _ in "kv"]
            self._arrays = self._per_layer(stacks)
            self.caches = [decoder._to_device(a) for a in stacks]
        elif decoder.cfg.device == "cpu":  # host buffers viewing numpy arrays
            # the graph-op step multiplies unwritten rows by a zero attention weight, so they must be finite
            self._arrays = [np.zeros(shape, np.float32) for _ in range(2 * dims.n_text_layer)]
            self.caches = [decoder._to_device(a) for a in self._arrays]
        else:
            from max.driver import Buffer
            from max.dtype import DType
            self._arrays = None
            self.caches = ([Buffer.zeros(stacked, DType.float32, decoder.device) for _ in "kv"] if decoder.cfg.fused
                           else [Buffer.zeros(shape, DType.float32, decoder.device) for _ in range(2 * dims.n_text_layer)])
        self.taps: list = []
        self._taps_repeat = 1  # taps of one row stand for each row of its group (_prefill_group_once)
        self._captured: CapturedStep | None = None
        self.capture = decoder.captures  # whether this state's single-token steps replay a captured graph
        # On CPU a MAX buffer views its numpy array: a single-token step writes its token, position and cache
        # count into these and hands MAX the same buffers again (each step's fresh arrays and buffers cost
        # 0.15 ms of the step's 0.27 ms of Python, measured on AMD EPYC, AVX2)
        self._single_token_inputs: tuple[list[np.ndarray], list] | None = None
        if decoder.cfg.device == "cpu":
            one = [np.zeros((self.batch, 1), np.int64), np.zeros(1, np.int64), np.zeros((1, 1), np.float32),
                   np.zeros(1, np.int64), np.zeros(1, np.int64)]  # tokens, position, causal mask, rows, count
            self._single_token_inputs = one, [decoder._to_device(a) for a in one]

    @property
    def batch(self) -> int:
        return self.n_audio * self.group

    def _per_layer(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Arrays shaped as `caches`, as keys and values per layer: the fused step's two stacks (layers * batch
        rows each) as views, the graph-op step's per-layer caches as they are."""
        if not self.decoder.cfg.fused:
            return arrays
        n = self.batch
        return [arrays[kv][i * n:(i + 1) * n] for i in range(self.decoder.cfg.dims.n_text_layer) for kv in (0, 1)]

    def step(self, tokens, logit_positions=None) -> np.ndarray:
        """Logits (batch, len(logit_positions), n_vocab) for `tokens` (batch, new) following the cached ones, at
        `logit_positions` among the new tokens (default: all of them)."""
        try:
            tokens = np.asarray(tokens)
        except ValueError:  # rows of different lengths
            raise MaxWhisperError("token rows have different lengths: pass one (batch, new) array of token ids") from None
        dims = self.decoder.cfg.dims
        if tokens.ndim != 2 or tokens.shape[0] != self.batch:
            raise MaxWhisperError(f"tokens have shape {tokens.shape}, expected ({self.batch}, new): "
                                  f"{self.n_audio} audio window(s) x {self.group} rows each")
        new = tokens.shape[1]
        if new < 1:
            raise MaxWhisperError("no tokens to decode: pass at least one token per row")
        if self.length + new > dims.n_text_ctx:
            raise MaxWhisperError(f"too many tokens: {self.length} cached + {new} new > n_text_ctx "
                                  f"{dims.n_text_ctx}; shorten the prompt (openai-whisper keeps at most "
                                  f"{dims.n_text_ctx // 2 - 1} prompt tokens)")
        if tokens.dtype.kind not in "iu" or tokens.min() < 0 or tokens.max() >= dims.n_vocab:
            raise MaxWhisperError(f"token ids must be integers in [0, {dims.n_vocab}) for this vocabulary")
        if self.filled == 0 and self.group > 1 and new > 1:
            per_window = tokens.reshape(self.n_audio, self.group, new)
            if (per_window == per_window[:, :1]).all():  # a beam or best-of group's prompt, one row per window
                return self._prefill_group_once(tokens[::self.group], logit_positions)
        bugs, d = self.decoder.cfg.bugs, self.decoder
        start = 0 if "pos_offset_reset" in bugs else self.length
        if "cache_off_by_one" in bugs and self.filled:  # the newest cached position is overwritten
            self.filled -= 1
        one_token = new == 1 and logit_positions is None
        if one_token and self._single_token_inputs is not None:  # a host step: the same input buffers again
            arrays, buffers = self._single_token_inputs
            arrays[0][:], arrays[1][0], arrays[4][0] = tokens, start, self.filled
            return self._finish(d.step_model.execute(*buffers, *self.caches, *self.cross), new)
        if one_token and self._captured is not None:  # a replay: no fresh input arrays either
            return self._finish(self._captured.outputs, new, self._captured.step(tokens, start, self.filled))
        positions = np.arange(start, start + new, dtype=np.int64)
        causal = np.triu(np.full((new, new), -np.inf, np.float32), k=1)
        if "no_causal_mask" in bugs:
            causal[:] = 0.0
        logit_positions = np.arange(new, dtype=np.int64) if logit_positions is None else np.asarray(logit_positions)
        if (logit_positions.ndim != 1 or len(logit_positions) == 0 or logit_positions.dtype.kind not in "iu"
                or (logit_positions < 0).any() or (logit_positions >= new).any()):
            raise MaxWhisperError(f"logit positions {logit_positions.tolist()} must be among the {new} new tokens "
                                  f"(0 to {new - 1})")
        repeat = None  # a row asked for twice goes through the graph once (the fused kernel takes at most `new`)
        if len(set(logit_positions.tolist())) < len(logit_positions):
            logit_positions, repeat = np.unique(logit_positions, return_inverse=True)
        inputs = [tokens.astype(np.int64), positions, causal, logit_positions, np.array([self.filled], np.int64)]
        if (self.capture and d.cfg.device == "gpu" and new == 1 and self._captured is None
                and self.batch not in d.capture_refused):
            try:
                self._captured = CapturedStep(self, inputs)
            except (RuntimeError, ValueError) as exc:  # the runtime cannot capture this graph: run steps eagerly
                self.capture, d.capture_refused[self.batch] = False, reason(exc, typed=True)
                d.progress(f"note: steps of batch {self.batch} run eagerly, not replayed: MAX could not capture the "
                           f"step graph ({d.capture_error})")
        if self._captured is not None and new == 1:  # a single-token step on GPU: one replay of a captured graph
            outs, logits = self._captured.outputs, self._captured.step(tokens, start, self.filled)
        else:
            outs = d.step_model.execute(*map(d._to_device, inputs), *self.caches, *self.cross)
            logits = None
        logits = self._finish(outs, new, logits)
        return logits if repeat is None else logits[:, repeat]

    def _finish(self, outs: list, new: int, logits: np.ndarray | None = None) -> np.ndarray:
        """Keep a step's taps, count its tokens, and return its logits (copied from outs[0] unless given)."""
        self.taps, self._taps_repeat = outs[1:], 1
        self.length += new
        self.filled += new
        return self.decoder._to_numpy(outs[0]) if logits is None else logits

    def _rewrite_caches(self, edit: Callable[[np.ndarray], None]) -> None:
        """Apply `edit` to each cache as a numpy array, keeping the buffers (a captured step reads them)."""
        if self._arrays is not None:
            for a in self._arrays:
                edit(a)
            return
        from max.driver import Buffer
        arrays = [self.decoder._to_numpy(buf) for buf in self.caches]
        for a in self._per_layer(arrays):
            edit(a)
        for buf, a in zip(self.caches, arrays):
            buf.inplace_copy_from(Buffer.from_numpy(a))

    def _prefill_group_once(self, tokens: np.ndarray, logit_positions) -> np.ndarray:
        """The first step of groups whose rows all hold the same tokens (openai-whisper repeats the prompt
        for each beam or best-of candidate): one row per audio window is decoded, and its cache rows, logits
        and taps are copied to the rest of its group. A batch-5 prompt of 190 tokens took 500 ms."""
        one = DecoderState(self.decoder, self.window_cross, 1)
        logits = one.step(tokens, logit_positions)
        new = tokens.shape[1]
        theirs = iter(one.cache_arrays())

        def copy(mine: np.ndarray) -> None:
            mine[:, :, :new] = np.repeat(next(theirs)[:, :, :new], self.group, axis=0)
        self._rewrite_caches(copy)
        self.taps, self._taps_repeat = one.taps, self.group
        self.length, self.filled = one.length, one.filled
        return np.repeat(logits, self.group, axis=0)

    def tap_arrays(self) -> dict[str, np.ndarray]:
        """The last step's taps by name, each (batch, new, d)."""
        names = decoder_tap_names(self.decoder.cfg.dims.n_text_layer)
        return {n: np.repeat(self.decoder._to_numpy(t), self._taps_repeat, axis=0) for n, t in zip(names, self.taps)}

    def cross_qk_arrays(self) -> list[np.ndarray]:
        """The last step's cross-attention scores of each layer, before the softmax, (batch, h, new, n_audio_ctx),
        scaled by 1 / sqrt(head width) as openai-whisper's qk is (a decoder compiled with cross_qk)."""
        if not self.decoder.cfg.cross_qk:
            raise MaxWhisperError("this decoder was compiled without cross-attention scores; "
                                  "use get_decoder(..., cross_qk=True)")
        return [np.repeat(self.decoder._to_numpy(t), self._taps_repeat, axis=0)  # a shared prompt's: every row
                for t in self.taps[-self.decoder.cfg.dims.n_text_layer:]]

    def cache_arrays(self) -> list[np.ndarray]:
        """The caches as numpy arrays, keys and values per layer, each (batch, h, n_text_ctx, dh): rows
        0 .. filled - 1 hold tokens, the rest are not yet written. Views on CPU, copies on GPU."""
        if self._arrays is not None:
            return self._arrays
        return self._per_layer([self.decoder._to_numpy(b) for b in self.caches])

    def reorder(self, source_indices) -> None:
        """Beam search: row r of the cache becomes row source_indices[r] (indices within each audio window)."""
        idx = np.asarray(source_indices)
        if idx.shape != (self.batch,) or idx.dtype.kind not in "iu" or (idx < 0).any() or (idx >= self.batch).any():
            raise MaxWhisperError(f"source indices {list(idx)} must be {self.batch} row numbers in [0, {self.batch})")
        if (idx // self.group != np.arange(self.batch) // self.group).any():
            raise MaxWhisperError("source indices must stay within each audio window's group of rows")
        moved = np.flatnonzero(idx != np.arange(self.batch))  # beams that stay put keep their rows
        if not len(moved):
            return
        filled, sources = self.filled, idx[moved]

        def gather(a: np.ndarray) -> None:  # the right side is a copy: rows may come from rows rewritten here
            a[moved, :, :filled] = a[sources, :, :filled]
        self._rewrite_caches(gather)


class CapturedStep:
    """A single-token step of one DecoderState as a captured device graph (MAX `Model.capture`): its kernels
    replayed by one launch. Its inputs are fixed buffers: each step copies the tokens, position and cache count
    into them; the state's caches and cross keys/values are its own, so the capture is too. Its logits come
    back into page-locked host memory (MAX's staging buffers), by one DMA copy: pageable memory took 0.040 ms
    of a 0.356 ms step on an H200 (2026-11-27), the driver copying through a bounce buffer."""

    _keys = iter(range(1, 1 << 62))
    STEP_INPUTS = (0, 1, 4)  # the step graph's inputs a single-token step changes: tokens, position, cache count

    def __init__(self, state: DecoderState, inputs: list[np.ndarray]):
        d = state.decoder
        self.model, self.key = d.step_model, next(self._keys)
        from max.driver import Buffer, Usage
        self.buffers = [d._to_device(a) for a in inputs]
        self.inputs = [*self.buffers, *state.caches, *state.cross]
        self.outputs = self.model.capture(self.key, *self.inputs)
        self.device, logits = d.device, self.outputs[0]

        def staged(buffer) -> Buffer:  # page-locked host memory on a GPU (plain host memory on the CPU), tracked:
            # MAX orders copies from and into it, and reading it (to_numpy) waits for a copy into it
            return Buffer(buffer.dtype, buffer.shape, device=d.device, usage=Usage.STAGING)
        self.host = staged(logits)  # the logits come back into it; reading it (to_numpy) waits for that copy
        from max.driver import DeviceEvent
        self.spin, self.copied = wait_setting(), DeviceEvent(d.device)  # MAXWHISPER_STEP_WAIT, read per capture
        # what a step copies in: host arrays viewing staged buffers made once (with a fresh buffer of each per
        # step, the copies' host side took 8.0 us on the Zen 5 EPYC, against 4.2)
        self.sources = [staged(self.buffers[i]) for i in self.STEP_INPUTS]
        self.held = {i: src.to_numpy() for i, src in zip(self.STEP_INPUTS, self.sources)}
        for i in self.STEP_INPUTS:
            self.held[i][...] = inputs[i]

    def load(self, tokens: np.ndarray, position: int, filled: int) -> None:
        """Copy a single-token step's token, position and cache count into the input buffers, in one
        submission (a single-token step's mask and logits row never change)."""
        from max.driver import batch_inplace_copy
        held = self.held
        held[0][:], held[1][0], held[4][0] = tokens, position, filled
        batch_inplace_copy([self.buffers[i] for i in self.STEP_INPUTS], self.sources)  # ordered before the
        # replay on the device's stream; the staged arrays are written again only after fetch's wait

    def step(self, tokens: np.ndarray, position: int, filled: int) -> np.ndarray:
        """Replay a single-token step (capturing records the kernels without running them; a step writes only
        its own cache rows, so running one twice changes nothing) and return its logits, a copy of the host
        buffer's (2 us for one row's 51864 values on the Zen 5 EPYC), which the next step overwrites. With the
        inputs written into staged arrays made once, the host's Python in a replayed step took 6.7-6.9 us
        (scripts/captured_step_host.py, the replay and the fetch stubbed out, Zen 5 EPYC; 18.4 us when each
        step compared and copied fresh arrays)."""
        self.load(tokens, position, filled)
        self.model.replay(self.key, *self.inputs)
        return self.fetch()

    def fetch(self) -> np.ndarray:
        """The replayed step's logits: copied into the host buffer, then out of it, once the copy is done (a
        synchronize, or under MAXWHISPER_STEP_WAIT=spin an event behind the copy, polled)."""
        self.host.inplace_copy_from(self.outputs[0])
        if self.spin:  # behind the copy on its own queue (the destination's: MAX enqueues a copy there)
            self.host.stream.record_event(self.copied)
            while not self.copied.is_ready():
                pass
        else:
            self.device.synchronize()
        return self.host.to_numpy().copy()

    def __del__(self):
        with contextlib.suppress(Exception):  # at interpreter shutdown the runtime may be gone
            self.model.release_captured_graph(self.key)


_MODELS: dict[tuple, MaxDecoder] = {}


_HALF_EXACT: dict[str, bool] = {}


def get_decoder(loaded, device: str = "cpu", dtype: str = "float32", bugs=frozenset(), fused: bool | None = None,
                storage: str | None = None, progress: Callable[[str], None] | None = None,
                exact_products: bool | None = None, warps: bool = False, cross_qk: bool = False) -> MaxDecoder:
    """The process-wide compiled decoder for these weights and settings (compiled on first use).
    `fused` on GPU: the warp kernels (decoder_warps.mojo), float32 on CUDA cores; None: those on an NVIDIA GPU
    in float32 (an H200 stepped in 0.57 ms eager against 2.66 ms for the graph ops on an H100), else graph ops.
    `warps` on CPU: their emulation (the suite checks it as it checks the CPU kernel).
    `storage` None: float16 for the fused kernels when every decoder weight is half-representable.
    `exact_products` None: on GPU in float32 (exact.py; True also runs them on CPU), for every graph-op
    product: with the fused step, the cross graph's alone (`graph_products`).
    `cross_qk`: the graph-op step that also outputs the cross-attention scores (word alignment; fused=False)."""
    if cross_qk and (fused or warps):
        raise MaxWhisperError("the cross-attention scores are the graph-op step's output; drop fused=True and warps")
    fused = False if cross_qk else True if warps else fused
    if fused is None and device == "gpu":
        fused = dtype == "float32" and max_device("gpu").api == "cuda"
    exact_products = exact.wanted(exact_products, device, dtype)
    cfg = DecoderConfig(loaded.dims, device, dtype, frozenset(bugs), fused, warps=warps, cross_qk=cross_qk)
    if storage is None and cfg.fused:
        if loaded.decoder_sha256 not in _HALF_EXACT:
            _HALF_EXACT[loaded.decoder_sha256] = half_exact(loaded.decoder_weights())
        storage = "float16" if _HALF_EXACT[loaded.decoder_sha256] else "float32"
    parts = 0
    if exact_products:
        if cfg.dtype != "float32":
            raise MaxWhisperError(f"exact products are float32's; a {cfg.dtype} decoder rounds its products anyway")
        parts = exact.parts_for(
            loaded.decoder_sha256, lambda: decoder_weights_to_max(loaded.decoder_weights(), loaded.dims.n_text_layer),
            graph_products(cfg.fused))
    cfg = dataclasses.replace(cfg, storage=storage or "float32", weight_parts=parts)
    key = (cfg.key, loaded.decoder_sha256)
    if key not in _MODELS:
        if bugs:
            base = get_decoder(loaded, device, dtype, fused=fused, storage=cfg.storage, progress=progress,
                               exact_products=bool(parts), warps=cfg.warps, cross_qk=cfg.cross_qk)
            _MODELS[key] = base.mutant(cfg.bugs, loaded.decoder_weights())
        else:
            _MODELS[key] = MaxDecoder(cfg, loaded.decoder_weights(), progress)
    return _MODELS[key]


def release(decoder_sha256: str) -> None:
    """Drop this process's compiled decoders of these weights (`get_decoder` keeps each for the process's life), so
    that their memory goes once the caller's references do; their graphs stay in MAX's cache on disk."""
    for key in [key for key in _MODELS if key[1] == decoder_sha256]:
        del _MODELS[key]
