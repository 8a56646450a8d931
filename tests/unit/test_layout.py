"""Shape and stride algebra, and weight-layout conversions as exact round trips (no compiles)."""
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from maxwhisper import layout
from maxwhisper.encoder import weight_shapes
from maxwhisper.weights import OFFICIAL_DIMS

pytestmark = pytest.mark.unit

floats = st.floats(-4, 4, width=32, allow_nan=False)


@given(length=st.integers(1, 4000), kernel=st.integers(1, 7), stride=st.integers(1, 3), padding=st.integers(0, 3))
def test_conv_out_len_matches_torch(length, kernel, stride, padding):
    assume(length + 2 * padding >= kernel)  # torch rejects an input shorter than the kernel
    out = torch.nn.functional.conv1d(torch.zeros(1, 1, length), torch.zeros(1, 1, kernel), stride=stride, padding=padding)
    assert layout.conv_out_len(length, kernel, stride, padding) == out.shape[-1]


def test_3000_frames_become_1500_positions():
    assert layout.encoder_out_shape(1, 80, 3000, 384) == (1, 1500, 384)


@given(batch=st.integers(1, 3), mels=st.integers(1, 8), frames=st.integers(1, 400), d=st.sampled_from([4, 6, 8]))
def test_encoder_out_shape_is_whisper_conv_stem_shape(batch, mels, frames, d):
    """Against openai-whisper's own stem (conv1 k=3 p=1, conv2 k=3 s=2 p=1) on any frame count. Widths from 4:
    openai-whisper's positional sinusoids divide by d / 2 - 1."""
    from whisper.model import AudioEncoder
    stem = AudioEncoder(mels, 1, d, 1, 0)
    with torch.no_grad():
        x = stem.conv2(stem.conv1(torch.zeros(batch, mels, frames))).permute(0, 2, 1)
    assert layout.encoder_out_shape(batch, mels, frames, d) == tuple(x.shape)


@pytest.mark.parametrize("size", sorted(OFFICIAL_DIMS))
def test_every_official_size_maps_3000_frames_onto_its_context(size):
    dims = OFFICIAL_DIMS[size]
    assert layout.encoder_out_shape(1, dims.n_mels, 3000, dims.n_audio_state) == (1, dims.n_audio_ctx, dims.n_audio_state)
    assert dims.n_mels == (128 if size.startswith("large-v3") or size in ("large", "turbo") else 80)  # the aliases: v3
    assert dims.n_audio_state % dims.n_audio_head == 0 and dims.n_audio_state // dims.n_audio_head == 64


@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=3, max_dims=3, max_side=9), elements=floats))
def test_conv_weight_rscf_round_trip(w):
    f = layout.conv1d_to_rscf(w)
    assert f.shape == (1, w.shape[2], w.shape[1], w.shape[0]) and f.flags.c_contiguous
    o, i, k = (np.array(w.shape) - 1) // 2
    assert f[0, k, i, o] == w[o, i, k]  # tap k of (out, in) lands at [0, k, in, out]
    np.testing.assert_array_equal(layout.rscf_to_conv1d(f), w)


@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, max_side=12), elements=floats),
       hnp.arrays(np.float32, st.integers(1, 12).map(lambda n: (n,)), elements=floats))
def test_linear_transpose_round_trip_and_product(w, x):
    x = np.resize(x, w.shape[1])
    wm = layout.linear_to_max(w)
    np.testing.assert_array_equal(layout.linear_from_max(wm), w)
    want = torch.nn.functional.linear(torch.from_numpy(x), torch.from_numpy(w)).numpy()
    # float32 sums of up to 12 products in another order: measured worst 2.3e-7 of sum |x||w| (20000 draws)
    bound = 1e-6 * (np.abs(x).astype(np.float64) @ np.abs(w).astype(np.float64).T) + 1e-30
    assert (np.abs(x @ wm - want) <= bound).all()


@given(st.integers(1, 16).flatmap(lambda d: st.tuples(
    *(hnp.arrays(np.float32, (d, d), elements=floats) for _ in range(3)),
    *(hnp.arrays(np.float32, (d,), elements=floats) for _ in range(2)))))
def test_fused_qkv_round_trip_with_zero_key_bias(parts):
    wq, wk, wv, bq, bv = parts
    w, b = layout.fuse_qkv(wq, wk, wv, bq, bv)
    d = wq.shape[0]
    assert w.shape == (d, 3 * d) and b.shape == (3 * d,)
    assert not b[d:2 * d].any(), "Whisper's key projection has no bias"
    for got, want in zip(layout.split_qkv(w, b), parts):
        np.testing.assert_array_equal(got, want)


@given(d_head=st.sampled_from([8, 16]), heads=st.integers(1, 3), layers=st.integers(0, 3), mels=st.sampled_from([80, 128]))
def test_graph_weight_names_and_shapes_match_builder(d_head, heads, layers, mels):
    from maxwhisper.weights import random_model
    from whisper.model import ModelDimensions
    d = d_head * heads
    dims = ModelDimensions(mels, 1500, d, heads, layers, 100, 8, d, heads, 1)
    converted = layout.encoder_weights_to_max(random_model(dims).encoder_weights(), layers)
    assert {k: v.shape for k, v in converted.items()} == weight_shapes(dims)
    assert all(v.dtype == np.float32 and v.flags.c_contiguous for v in converted.values())


@given(seed=st.integers(0, 2**32 - 1), shape=hnp.array_shapes(min_dims=1, max_dims=2, max_side=64),
       scale=st.sampled_from([1e-20, 1e-3, 1.0, 1e4, 1e30]))
def test_exact_product_parts_are_bfloat16_and_sum_to_the_weight(seed, shape, scale):
    """exact.py's split: three parts, each a bfloat16 value, summing to the float32 weight exactly; a
    half-precision weight is one part (TF32 holds it), and a float32 one is refused as one part. (Weights
    within 2^24 of float32's smallest normal value, ~1e-31, have parts below it: at scale 1e-30 this found
    a part that bfloat16 does not hold. No checkpoint has such values.)"""
    from maxwhisper import exact
    w = (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)
    parts = exact.weight_parts(w)
    assert all(np.array_equal(torch.from_numpy(p).bfloat16().float().numpy(), p) for p in parts)
    np.testing.assert_array_equal((parts[0] + parts[1]) + parts[2], w)
    assert exact.joined_parts(w, 3).shape == (*shape[:-1], 3 * shape[-1])
    with np.errstate(over="ignore"):  # beyond half's range: inf, and skipped below
        half = w.astype(np.float16).astype(np.float32)
    if np.isfinite(half).all() and (np.abs(half) >= 2.0**-14).all():  # normal half values: 11 significant bits
        assert exact.n_weight_parts([half]) == 1
        np.testing.assert_array_equal(exact.joined_parts(half, 1), half)
    bits = w.view(np.uint32) & np.uint32(0xFFFFE000)  # 11 significant bits: TF32's; one bit more is not
    assert exact.tf32_exact(bits.view(np.float32)) and not exact.tf32_exact((bits | 0x1000).view(np.float32))
    if not exact.tf32_exact(w):
        assert exact.n_weight_parts([half, w]) == 3
        with pytest.raises(ValueError, match="three parts"):
            exact.joined_parts(w, 1)


@pytest.mark.parametrize("parts", [1, 3])
def test_exact_parts_with_the_fused_step_join_the_cross_projection_alone(parts):
    """On GPU the warp kernels' decoder takes exact products in its cross graph only (graph ops there, its
    own float32 arithmetic in the kernels): the cross projection's weight is bound in parts, and the kernels'
    packed blocks and logits weights are the same as without them (a part joined into them would misalign
    every packed weight after it). Random float32 weights at tiny.en's widths, two layers; no compile."""
    from maxwhisper import exact, weights
    from maxwhisper.decoder import DecoderConfig, _registry, weight_shapes
    loaded = weights.load("random:tiny.en:0")
    given = loaded.decoder_weights()
    if parts == 1:  # TF32 holds half values whole: one part
        given = {k: v.astype(np.float16).astype(np.float32) for k, v in given.items()}
    plain = DecoderConfig(loaded.dims, "gpu", fused=True)
    split = DecoderConfig(loaded.dims, "gpu", fused=True, weight_parts=parts)
    with_parts, without = _registry(split, given), _registry(plain, given)
    assert {k: tuple(v.shape) for k, v in with_parts.items()} == weight_shapes(loaded.dims, True, parts)
    for name, tensor in with_parts.items():
        if name.endswith("cross_kv.w"):
            assert tensor.shape[1] == parts * without[name].shape[1]
            first = tensor[:, :without[name].shape[1]].numpy()
            np.testing.assert_array_equal(first, exact.weight_parts(without[name].numpy())[0] if parts == 3
                                          else without[name].numpy())
        else:
            assert torch.equal(tensor, without[name]), name
