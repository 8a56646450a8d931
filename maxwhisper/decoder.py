"""Whisper's TextDecoder as two MAX graphs with a key/value cache, compiled once per process.

    cross graph  features (audio, n_audio_ctx, d) -> per layer: cross keys (audio, h, dh, ctx) and
                 values (audio, h, ctx, dh); run once per audio window.
    step graph   tokens (batch, new), positions (new,), causal mask among the new tokens (new, new), the
                 rows to return logits for (rows,), the self-attention keys/values of the `past` tokens per
                 layer, cross keys/values per audio window (fused) or per row
      -> token + positional embedding -> n_layer x [x + self_attn(ln(x)); x + cross_attn(ln(x)); x + mlp(ln(x))]
      -> ln -> logits against the tied token embedding at the rows asked for (batch, rows, n_vocab)
      also returns every block's output (the taps).
    The fused step keeps each layer's keys and values in buffers of the whole context
    (batch, h, n_text_ctx, dh), given with `past` (1,), the count they hold, and writes the new tokens'
    rows in place. Elsewhere the caches are plain inputs (batch, h, past, dh) and the graph returns them
    grown (batch, h, past + new, dh).

`batch`, `new` and `past` are symbolic: one compiled step graph serves the prompt prefill and
single-token steps, greedy (batch 1), best-of and beam search (batch n) alike. Rows of one audio window
(a beam or best-of group) get that window's cross keys and values. Weights are `Weight` nodes bound at
load time, as in the encoder.

On CPU (`fused`, the default there) each block is one custom Mojo op, `decoder_block`
(maxwhisper/kernels), and the logits product runs on `gemv_nt`, which streams the embedding's
(n_vocab, d) rows packed in panels of four (`gemv.panels`): a step is memory-bound and small, and a graph
of ~100 small ops spent most of its time dispatching them. Elsewhere the blocks are plain graph ops and
the logits product reads the embedding stored pre-transposed, (d, n_vocab).

The fused kernels read their weights in half (`storage="float16"`) when every decoder weight is
half-representable, as in Whisper's own checkpoints: the kernels widen each value as they load it, so the
arithmetic and the logits are float32's, bit for bit, while a step streams half the bytes. Other weights
(fine-tuned in float32, seeded random ones) keep float32 storage.
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from whisper.model import ModelDimensions

from maxwhisper.encoder import LN_EPS, _max_dtype, _session, _stderr, max_device
from maxwhisper.errors import MaxWhisperError
from maxwhisper.layout import decoder_weights_to_max

# Bugs that typically break decoder ports. The self-check injects them where they would live: in the
# host-side cache handling or in the weight layout (the compiled graphs stay the same: no extra compile).
BUGS = ("no_causal_mask", "cache_off_by_one", "pos_offset_reset", "stale_cross_window", "kv_swapped",
        "untied_logits")
WEIGHT_BUGS = frozenset({"kv_swapped", "untied_logits"})


def tap_names(n_layer: int) -> list[str]:
    """The step graph's taps, in order: the embedding sum, each block's output, the final LayerNorm."""
    return ["embed", *(f"block{i}" for i in range(n_layer)), "ln"]


@dataclass(frozen=True)
class DecoderConfig:
    dims: ModelDimensions
    device: str = "cpu"
    dtype: str = "float32"  # of the logits weights; everything else computes in float32
    bugs: frozenset[str] = frozenset()  # only the suite's self-check injects any
    fused: bool | None = None  # blocks as decoder_block ops, logits on gemv_nt; None: on CPU (CPU-only kernels)
    storage: str = "float32"  # of the fused kernels' weights: float16 only for half-representable weights

    def __post_init__(self):
        if self.fused is None:
            object.__setattr__(self, "fused", self.device == "cpu" and self.dtype == "float32")
        if self.fused and (self.device != "cpu" or self.dtype != "float32"):
            raise MaxWhisperError("the fused decoder kernels run float32 on CPU only; use fused=False")
        if self.storage not in ("float32", "float16") or (self.storage == "float16" and not self.fused):
            raise MaxWhisperError(f"weight storage {self.storage!r}: float32, or float16 with the fused CPU kernels")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise MaxWhisperError(f"unknown decoder dtype {self.dtype!r}; choose float32, bfloat16 or float16")
        if unknown := set(self.bugs) - set(BUGS):
            raise MaxWhisperError(f"unknown decoder bug classes {sorted(unknown)}; known: {', '.join(BUGS)}")

    @property
    def key(self) -> tuple:
        return (tuple(vars(self.dims).values()), self.device, self.dtype, self.bugs, self.fused, self.storage)

    @property
    def head_dim(self) -> int:
        return self.dims.n_text_state // self.dims.n_text_head


def weight_shapes(dims: ModelDimensions, fused: bool = False) -> dict[str, tuple[int, ...]]:
    """Shape of every weight the two graphs bind, by name (`fused`: blocks packed, the logits' (n_vocab, d)
    in gemv_nt's panels)."""
    shapes = _shapes(dims)
    if fused:
        from maxwhisper.fused import PACKED, packed_size
        from maxwhisper.gemv import panels_size
        packed = {name.split(".")[0] for name in PACKED}  # read packed, one vector per block
        shapes = {k: v for k, v in shapes.items() if not (k.startswith("blocks.") and k.split(".")[2] in packed)}
        shapes["logits.w"] = (panels_size(dims.n_vocab, dims.n_text_state),)
        shapes.update({f"blocks.{i}.packed": (packed_size(dims.n_text_state),) for i in range(dims.n_text_layer)})
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
    shapes, nodes = weight_shapes(cfg.dims, cfg.fused), {}

    def weight(name: str):
        if name not in nodes:
            dtype = _max_dtype(_stored(cfg, name))
            nodes[name] = Weight(name, dtype, shapes[name], dev)
        return nodes[name]
    return weight


def _linear(x, weight, name: str):
    return x @ weight(name + ".w") + weight(name + ".b")


def build_cross_graph(cfg: DecoderConfig):
    """features (audio, ctx, d) -> [k_0, v_0, k_1, v_1, ...]: k as (audio, h, dh, ctx), v as (audio, h, ctx, dh)."""
    from max.dtype import DType
    from max.graph import DeviceRef, Graph, TensorType, ops
    dims, dh = cfg.dims, cfg.head_dim
    d, h = dims.n_text_state, dims.n_text_head
    dev = DeviceRef.GPU() if cfg.device == "gpu" else DeviceRef.CPU()
    weight = _graph_weights(cfg, dev)
    xa_type = TensorType(DType.float32, ["audio", dims.n_audio_ctx, d], device=dev)
    with Graph(f"whisper_decoder_cross_{cfg.dtype}", input_types=[xa_type]) as graph:
        xa = graph.inputs[0].tensor
        a, t = xa.shape[0], xa.shape[1]
        outs = []
        for i in range(dims.n_text_layer):
            k, v = ops.split(_linear(xa, weight, f"blocks.{i}.cross_kv"), [d, d], axis=-1)
            outs.append(ops.permute(ops.reshape(k, [a, t, h, dh]), [0, 2, 3, 1]))
            outs.append(ops.permute(ops.reshape(v, [a, t, h, dh]), [0, 2, 1, 3]))
        graph.output(*outs)
    return graph


def build_step_graph(cfg: DecoderConfig):
    """One decoder pass over `new` tokens per row, given the cache of `past` tokens (see module docstring)."""
    from max.dtype import DType
    from max.graph import BufferType, DeviceRef, Graph, TensorType, ops
    dims, dh = cfg.dims, cfg.head_dim
    d, h, n_layer, ctx = dims.n_text_state, dims.n_text_head, dims.n_text_layer, dims.n_audio_ctx
    dev = DeviceRef.GPU() if cfg.device == "gpu" else DeviceRef.CPU()
    weight = _graph_weights(cfg, dev)
    windows = "audio" if cfg.fused else "batch"
    if cfg.fused:  # the count of cached tokens, then buffers of the whole context, written in place
        caches = [TensorType(DType.int64, [1], device=dev),
                  *[BufferType(DType.float32, ["batch", h, dims.n_text_ctx, dh], device=dev)] * (2 * n_layer)]
    else:
        caches = [TensorType(DType.float32, ["batch", h, "past", dh], device=dev)] * (2 * n_layer)
    types = [TensorType(DType.int64, ["batch", "new"], device=dev),
             TensorType(DType.int64, ["new"], device=dev),
             TensorType(DType.float32, ["new", "new"], device=dev),
             TensorType(DType.int64, ["rows"], device=dev),
             *caches,
             # per audio window when fused (the kernel maps each row to its window), else per row
             *[TensorType(DType.float32, [windows, h, dh, ctx], device=dev),
               TensorType(DType.float32, [windows, h, ctx, dh], device=dev)] * n_layer]
    from maxwhisper.fused import KERNELS_PATH, decoder_block
    name = f"whisper_decoder_step_{cfg.dtype}" + (f"_fused_{cfg.storage}" if cfg.fused else "")
    with Graph(name, input_types=types, custom_extensions=[KERNELS_PATH] if cfg.fused else []) as graph:
        tokens, positions, causal, rows = (v.tensor for v in graph.inputs[:4])
        first = 5 if cfg.fused else 4
        past = graph.inputs[4].tensor if cfg.fused else None
        caches = [v.buffer if cfg.fused else v.tensor for v in graph.inputs[first:first + 2 * n_layer]]
        cross = [v.tensor for v in graph.inputs[first + 2 * n_layer:]]
        b, t = tokens.shape
        if not cfg.fused:
            p = caches[0].shape[2]
            # every cached key is visible; among the new tokens, the causal mask (0 on and below the diagonal)
            zero = ops.constant(0.0, DType.float32, dev)
            mask = ops.concat([ops.broadcast_to(zero, [t, p]), causal], axis=1)  # (new, past + new)
        scale = 1.0 / math.sqrt(dh)

        def ln(x, name):
            return ops.layer_norm(x, weight(name + ".w"), weight(name + ".b"), LN_EPS)

        def linear(x, name):
            return _linear(x, weight, name)

        def heads(z):  # (b, t, d) -> (b, h, t, dh)
            return ops.permute(ops.reshape(z, [b, t, h, dh]), [0, 2, 1, 3])

        def merge(o):  # (b, h, t, dh) -> (b, t, d)
            return ops.reshape(ops.permute(o, [0, 2, 1, 3]), [b, t, d])

        def self_attention(x, i):
            q, k, v = ops.split(linear(x, f"blocks.{i}.qkv"), [d, d, d], axis=-1)
            k = ops.concat([caches[2 * i], heads(k)], axis=2)
            v = ops.concat([caches[2 * i + 1], heads(v)], axis=2)
            scores = (heads(q) @ ops.transpose(k, 2, 3)) * scale + mask
            return linear(merge(ops.softmax(scores) @ v), f"blocks.{i}.out"), k, v

        def cross_attention(x, i):
            q = heads(linear(x, f"blocks.{i}.cross_q"))
            o = ops.softmax((q @ cross[2 * i]) * scale) @ cross[2 * i + 1]
            return linear(merge(o), f"blocks.{i}.cross_out")

        def block(x, i):  # one decoder block: (output, [grown keys, grown values] unless they grow in place)
            if cfg.fused:  # the whole block in one custom op, over (batch * new) rows
                y = decoder_block(ops.reshape(x, [b * t, d]), causal, past, caches[2 * i], caches[2 * i + 1],
                                  cross[2 * i], cross[2 * i + 1], weight(f"blocks.{i}.packed"))
                return ops.reshape(y, [b, t, d]), []
            blk = f"blocks.{i}."
            attn, k, v = self_attention(ln(x, blk + "attn_ln"), i)
            x = x + attn
            x = x + cross_attention(ln(x, blk + "cross_ln"), i)
            x = x + linear(ops.gelu(linear(ln(x, blk + "mlp_ln"), blk + "fc1")), blk + "fc2")
            return x, [k, v]

        x = ops.gather(weight("tok_emb"), tokens, axis=0) + ops.gather(weight("pos"), positions, axis=0)
        taps, new_caches = [x], []
        for i in range(n_layer):
            x, grown = block(x, i)
            taps.append(x)
            new_caches += grown
        x = ln(x, "ln")
        taps.append(x)
        x = ops.gather(x, rows, axis=1)  # logits only for the rows asked for
        logits_w = weight("logits.w")
        if cfg.fused:
            from maxwhisper.gemv import gemv_nt
            rows_out = x.shape[1]
            logits = gemv_nt(ops.reshape(x, [b * rows_out, d]), logits_w, dims.n_vocab)
            logits = ops.reshape(logits, [b, rows_out, dims.n_vocab])
        elif cfg.dtype == "float32":
            logits = x @ logits_w
        else:
            logits = ops.cast(ops.cast(x, logits_w.dtype) @ logits_w, DType.float32)
        graph.output(logits, *new_caches, *taps)
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
    if cfg.fused:
        from maxwhisper.fused import pack_block
        for i in range(cfg.dims.n_text_layer):
            w[f"blocks.{i}.packed"] = pack_block(w, f"blocks.{i}.")  # float32: stored below, in cfg.storage
        from maxwhisper.gemv import panels
        w["logits.w"] = panels(w["logits.w"].T)
    shapes, registry = weight_shapes(cfg.dims, cfg.fused), {}
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
        self.device = max_device(cfg.device)
        try:
            registry = _registry(cfg, decoder_weights)
        except KeyError as exc:
            raise MaxWhisperError(f"decoder weights lack tensor {exc}; the checkpoint is incomplete") from None
        for name, shape in weight_shapes(cfg.dims, cfg.fused).items():
            if tuple(registry[name].shape) != shape:
                raise MaxWhisperError(f"decoder weight {name} has shape {tuple(registry[name].shape)}, "
                                      f"expected {shape} for these model dimensions")
        dims = cfg.dims
        (progress or _stderr)(f"compiling MAX decoder (d={dims.n_text_state} layers={dims.n_text_layer} "
                              f"vocab={dims.n_vocab}, {cfg.device}, {cfg.dtype}"
                              + (f", {cfg.storage} weights" if cfg.fused else "") + "); the first compile takes a few "
                              "minutes on 2 cores, later ones load from ~/.cache/modular")
        start = time.perf_counter()
        session = _session(cfg.device)
        self.cross_model = session.load(build_cross_graph(cfg), weights_registry=registry)
        self.step_model = session.load(build_step_graph(cfg), weights_registry=registry)
        self.compile_s = time.perf_counter() - start

    def mutant(self, bugs: frozenset[str], decoder_weights: dict[str, np.ndarray]) -> "MaxDecoder":
        """This decoder with `bugs` injected (the self-check). Host-side bugs share the compiled models;
        weight-layout bugs rebind the step graph (a load from MAX's cache, no new compile)."""
        import copy
        mutant = copy.copy(self)
        mutant.cfg = dataclasses.replace(self.cfg, bugs=frozenset(bugs))
        if mutant.cfg.bugs & WEIGHT_BUGS:
            registry = _registry(mutant.cfg, decoder_weights)
            mutant.step_model = _session(self.cfg.device).load(build_step_graph(mutant.cfg), weights_registry=registry)
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
        shape = tuple(features.shape)
        if len(shape) != 3 or shape[1:] != expected or shape[0] < 1:
            hint = " (add a batch axis: features[None])" if shape == expected else ""
            raise MaxWhisperError(f"audio features have shape {shape}, expected (batch, {expected[0]}, "
                                  f"{expected[1]}) from this model's encoder{hint}")
        if isinstance(features, torch.Tensor):
            features = features.detach().to("cpu", torch.float32).numpy()
        return np.ascontiguousarray(features, dtype=np.float32)

    def cross(self, features) -> list:
        """Cross-attention keys and values of each layer for these audio features (device buffers)."""
        kv = list(self.cross_model.execute(self._to_device(self.check_features(features))))
        if "stale_cross_window" in self.cfg.bugs:  # keeps attending to the first window it saw
            self.__dict__.setdefault("_first_cross", kv)
            return self._first_cross
        return kv

    def new_state(self, features, group: int = 1) -> "DecoderState":
        """An empty cache for `group` token rows per audio window of `features`."""
        if group < 1:
            raise MaxWhisperError(f"empty batch: {group} token rows per audio window; pass at least one")
        return DecoderState(self, self.cross(features), group)


class DecoderState:
    """The caches of one decode: cross keys/values per audio window, self-attention keys/values per row."""

    def __init__(self, decoder: MaxDecoder, cross: list, group: int):
        self.decoder, self.group = decoder, group
        self.n_audio = int(cross[0].shape[0])
        if group > 1 and not decoder.cfg.fused:  # each row of a group attends to its window's keys and values
            cross = [decoder._to_device(np.repeat(decoder._to_numpy(c), group, axis=0)) for c in cross]
        self.cross = cross
        self.length = 0  # tokens decoded: the next token's position
        self.filled = 0  # tokens the self-attention cache holds (fewer only under the cache_off_by_one bug)
        dims, dh = decoder.cfg.dims, decoder.cfg.head_dim
        self.in_place = decoder.cfg.fused
        if self.in_place:  # the whole context per layer, written by each step at rows filled onwards
            shape = (self.batch, dims.n_text_head, dims.n_text_ctx, dh)
            self._arrays = [np.empty(shape, np.float32) for _ in range(2 * dims.n_text_layer)]
            self.caches = [decoder._to_device(a) for a in self._arrays]  # host buffers viewing the arrays
        else:
            empty = np.zeros((self.batch, dims.n_text_head, 0, dh), np.float32)
            self.caches = [decoder._to_device(empty) for _ in range(2 * dims.n_text_layer)]
        self.taps: list = []
        self._taps_repeat = 1  # taps of one row stand for each row of its group (_prefill_group_once)

    @property
    def batch(self) -> int:
        return self.n_audio * self.group

    def step(self, tokens, rows=None) -> np.ndarray:
        """Logits (batch, len(rows), n_vocab) for `tokens` (batch, new) following the cached ones, at the
        new tokens' positions `rows` (default: all of them)."""
        tokens = np.asarray(tokens)
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
        if tokens.dtype.kind not in "iu" or (tokens < 0).any() or (tokens >= dims.n_vocab).any():
            raise MaxWhisperError(f"token ids must be integers in [0, {dims.n_vocab}) for this vocabulary")
        if self.in_place and self.filled == 0 and self.group > 1 and new > 1:
            per_window = tokens.reshape(self.n_audio, self.group, new)
            if (per_window == per_window[:, :1]).all():  # a beam or best-of group's prompt, one row per window
                return self._prefill_group_once(tokens[::self.group], rows)
        bugs, d = self.decoder.cfg.bugs, self.decoder
        start = 0 if "pos_offset_reset" in bugs else self.length
        positions = np.arange(start, start + new, dtype=np.int64)
        if "cache_off_by_one" in bugs and self.filled:  # the newest cached position is overwritten
            self.filled -= 1
            if not self.in_place:
                self.caches = [d._to_device(d._to_numpy(c)[:, :, :-1]) for c in self.caches]
        causal = np.triu(np.full((new, new), -np.inf, np.float32), k=1)
        if "no_causal_mask" in bugs:
            causal[:] = 0.0
        rows = np.arange(new, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        if rows.ndim != 1 or len(rows) == 0 or (rows < 0).any() or (rows >= new).any():
            raise MaxWhisperError(f"logit rows {rows.tolist()} must be positions among the {new} new tokens")
        past = [d._to_device(np.array([self.filled], np.int64))] if self.in_place else []
        outs = d.step_model.execute(d._to_device(tokens.astype(np.int64)), d._to_device(positions),
                                    d._to_device(causal), d._to_device(rows), *past, *self.caches, *self.cross)
        grown = 0 if self.in_place else 2 * dims.n_text_layer
        if grown:
            self.caches = list(outs[1:1 + grown])
        self.taps, self._taps_repeat = outs[1 + grown:], 1
        self.length += new
        self.filled += new
        return d._to_numpy(outs[0])

    def _prefill_group_once(self, tokens: np.ndarray, rows) -> np.ndarray:
        """The first step of groups whose rows all hold the same tokens (openai-whisper repeats the prompt
        for each beam or best-of candidate): one row per audio window is decoded, and its cache rows, logits
        and taps are copied to the rest of its group. A batch-5 prompt of 190 tokens took 500 ms."""
        one = DecoderState(self.decoder, self.cross, 1)
        logits = one.step(tokens, rows)
        new = tokens.shape[1]
        for mine, its in zip(self._arrays, one._arrays):
            mine[:, :, :new] = np.repeat(its[:, :, :new], self.group, axis=0)
        self.taps, self._taps_repeat = one.taps, self.group
        self.length, self.filled = one.length, one.filled
        return np.repeat(logits, self.group, axis=0)

    def tap_arrays(self) -> dict[str, np.ndarray]:
        """The last step's taps by name, each (batch, new, d)."""
        names = tap_names(self.decoder.cfg.dims.n_text_layer)
        return {n: np.repeat(self.decoder._to_numpy(t), self._taps_repeat, axis=0) for n, t in zip(names, self.taps)}

    def cache_arrays(self) -> list[np.ndarray]:
        """The in-place caches as numpy views, keys and values per layer, each (batch, h, n_text_ctx, dh):
        rows 0 .. filled - 1 hold tokens, the rest are not yet written."""
        if not self.in_place:
            raise MaxWhisperError("this decoder returns grown caches (fused=False); only the fused one keeps them in place")
        return self._arrays

    def reorder(self, source_indices) -> None:
        """Beam search: row r of the cache becomes row source_indices[r] (indices within each audio window)."""
        idx = np.asarray(source_indices, dtype=np.int64)
        if idx.shape != (self.batch,) or (idx < 0).any() or (idx >= self.batch).any():
            raise MaxWhisperError(f"source indices {list(idx)} must be {self.batch} row numbers in [0, {self.batch})")
        if (idx // self.group != np.arange(self.batch) // self.group).any():
            raise MaxWhisperError("source indices must stay within each audio window's group of rows")
        if (idx == np.arange(self.batch)).all():
            return
        if self.in_place:
            for a in self._arrays:  # the right side is a copy: rows may come from rows rewritten here
                a[:, :, :self.filled] = a[idx, :, :self.filled]
            return
        d = self.decoder
        self.caches = [d._to_device(d._to_numpy(buf)[idx]) for buf in self.caches]


_MODELS: dict[tuple, MaxDecoder] = {}


_HALF_EXACT: dict[str, bool] = {}


def get_decoder(loaded, device: str = "cpu", dtype: str = "float32", bugs=frozenset(), fused: bool | None = None,
                storage: str | None = None, progress: Callable[[str], None] | None = None) -> MaxDecoder:
    """The process-wide compiled decoder for these weights and settings (compiled on first use).
    `storage` None: float16 for the fused kernels when every decoder weight is half-representable."""
    cfg = DecoderConfig(loaded.dims, device, dtype, frozenset(bugs), fused)
    if storage is None and cfg.fused:
        if loaded.decoder_sha256 not in _HALF_EXACT:
            _HALF_EXACT[loaded.decoder_sha256] = half_exact(loaded.decoder_weights())
        storage = "float16" if _HALF_EXACT[loaded.decoder_sha256] else "float32"
    cfg = dataclasses.replace(cfg, storage=storage or "float32")
    key = (cfg.key, loaded.decoder_sha256)
    if key not in _MODELS:
        if bugs:
            base = get_decoder(loaded, device, dtype, fused=fused, storage=cfg.storage, progress=progress)
            _MODELS[key] = base.mutant(cfg.bugs, loaded.decoder_weights())
        else:
            _MODELS[key] = MaxDecoder(cfg, loaded.decoder_weights(), progress)
    return _MODELS[key]
