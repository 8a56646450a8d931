"""Weight layouts: PyTorch's conv/linear layouts to the ones the MAX graph consumes, and back.

Every function here is a pure numpy re-arrangement, tested as an exact round trip.
"""
from __future__ import annotations

import numpy as np


def conv_out_len(length: int, kernel: int = 3, stride: int = 1, padding: int = 1, dilation: int = 1) -> int:
    """Output length of a 1-D convolution (PyTorch's formula)."""
    return (length + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def encoder_out_shape(batch: int, n_mels: int, frames: int, d_model: int) -> tuple[int, int, int]:
    """(batch, n_mels, frames) -> (batch, positions, d_model) through conv1 (stride 1) and conv2 (stride 2)."""
    del n_mels  # the channel count does not change the length
    return batch, conv_out_len(conv_out_len(frames, stride=1), stride=2), d_model


def conv1d_to_rscf(w: np.ndarray) -> np.ndarray:
    """PyTorch conv1d weight (out, in, k) -> MAX conv2d filter RSCF (1, k, in, out)."""
    return np.ascontiguousarray(w.transpose(2, 1, 0)[None])


def rscf_to_conv1d(f: np.ndarray) -> np.ndarray:
    """Inverse of `conv1d_to_rscf`."""
    return np.ascontiguousarray(f[0].transpose(2, 1, 0))


def linear_to_max(w: np.ndarray) -> np.ndarray:
    """PyTorch Linear weight (out, in) -> (in, out), so the graph computes x @ W."""
    return np.ascontiguousarray(w.T)


def linear_from_max(w: np.ndarray) -> np.ndarray:
    """Inverse of `linear_to_max`."""
    return np.ascontiguousarray(w.T)


def fuse_qkv(wq: np.ndarray, wk: np.ndarray, wv: np.ndarray, bq: np.ndarray, bv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Three (d, d) projections -> one (d, 3d) matrix for x @ W, and a (3d,) bias whose key part is zero."""
    w = np.concatenate([wq, wk, wv], axis=0)
    b = np.concatenate([bq, np.zeros_like(bq), bv])
    return linear_to_max(w), np.ascontiguousarray(b)


def split_qkv(w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of `fuse_qkv`: (wq, wk, wv, bq, bv) in PyTorch layout."""
    wq, wk, wv = np.split(linear_from_max(w), 3, axis=0)
    bq, _, bv = np.split(b, 3)
    return wq, wk, wv, bq, bv


def encoder_weights_to_max(w: dict[str, np.ndarray], n_layer: int) -> dict[str, np.ndarray]:
    """openai-whisper AudioEncoder tensors (names without `encoder.`) -> the MAX graph's weight names."""
    out = {
        "conv1.w": conv1d_to_rscf(w["conv1.weight"]), "conv1.b": w["conv1.bias"],
        "conv2.w": conv1d_to_rscf(w["conv2.weight"]), "conv2.b": w["conv2.bias"],
        "pos": w["positional_embedding"], "ln_post.w": w["ln_post.weight"], "ln_post.b": w["ln_post.bias"],
    }
    for i in range(n_layer):
        p = f"blocks.{i}."
        out[p + "qkv.w"], out[p + "qkv.b"] = fuse_qkv(
            w[p + "attn.query.weight"], w[p + "attn.key.weight"], w[p + "attn.value.weight"],
            w[p + "attn.query.bias"], w[p + "attn.value.bias"])
        out[p + "out.w"], out[p + "out.b"] = linear_to_max(w[p + "attn.out.weight"]), w[p + "attn.out.bias"]
        out[p + "fc1.w"], out[p + "fc1.b"] = linear_to_max(w[p + "mlp.0.weight"]), w[p + "mlp.0.bias"]
        out[p + "fc2.w"], out[p + "fc2.b"] = linear_to_max(w[p + "mlp.2.weight"]), w[p + "mlp.2.bias"]
        for ln in ("attn_ln", "mlp_ln"):
            out[f"{p}{ln}.w"], out[f"{p}{ln}.b"] = w[f"{p}{ln}.weight"], w[f"{p}{ln}.bias"]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def decoder_weights_to_max(w: dict[str, np.ndarray], n_layer: int) -> dict[str, np.ndarray]:
    """openai-whisper TextDecoder tensors (names without `decoder.`) -> the MAX decoder graphs' names.

    The token embedding appears twice: as rows for the lookup (`tok_emb`, (n_vocab, d)) and transposed
    for the tied logits product (`logits.w`, (d, n_vocab)), which the graph-op step streams row by row (the
    fused CPU step packs the embedding itself, (n_vocab, d), in gemv_nt's panels: decoder._registry).
    """
    emb = w["token_embedding.weight"]
    out = {"tok_emb": emb, "logits.w": linear_to_max(emb), "pos": w["positional_embedding"],
           "ln.w": w["ln.weight"], "ln.b": w["ln.bias"]}
    for i in range(n_layer):
        p = f"blocks.{i}."
        out[p + "qkv.w"], out[p + "qkv.b"] = fuse_qkv(
            w[p + "attn.query.weight"], w[p + "attn.key.weight"], w[p + "attn.value.weight"],
            w[p + "attn.query.bias"], w[p + "attn.value.bias"])
        c = p + "cross_attn."
        out[p + "cross_q.w"], out[p + "cross_q.b"] = linear_to_max(w[c + "query.weight"]), w[c + "query.bias"]
        out[p + "cross_kv.w"] = linear_to_max(np.concatenate([w[c + "key.weight"], w[c + "value.weight"]]))
        out[p + "cross_kv.b"] = np.concatenate([np.zeros_like(w[c + "value.bias"]), w[c + "value.bias"]])
        for ours, theirs in (("out", "attn.out"), ("cross_out", "cross_attn.out"), ("fc1", "mlp.0"), ("fc2", "mlp.2")):
            out[f"{p}{ours}.w"], out[f"{p}{ours}.b"] = linear_to_max(w[f"{p}{theirs}.weight"]), w[f"{p}{theirs}.bias"]
        for ln in ("attn_ln", "cross_attn_ln", "mlp_ln"):
            ours = "cross_ln" if ln == "cross_attn_ln" else ln
            out[f"{p}{ours}.w"], out[f"{p}{ours}.b"] = w[f"{p}{ln}.weight"], w[f"{p}{ln}.bias"]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}
