"""The encoder's conv1d (NHWC conv2d with an RSCF filter) against torch, over random lengths,
channel counts and values: one symbolic graph, compiled once. Guards upstream CPU conv2d bugs
(boundary rows with zero padding, C_in >= 8, width padding)."""
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from maxwhisper.layout import conv1d_to_rscf, conv_out_len

pytestmark = pytest.mark.unit


@pytest.fixture(scope="session")
def conv_stem():
    from maxwhisper.encoder import load_conv_stem
    return load_conv_stem("cpu")


@st.composite
def conv_cases(draw):
    batch, length = draw(st.integers(1, 3)), draw(st.integers(1, 700))
    c_in, c_out = draw(st.integers(1, 96)), draw(st.integers(1, 48))
    values = st.floats(-4, 4, width=32)
    x = draw(hnp.arrays(np.float32, (batch, length, c_in), elements=values))
    w = draw(hnp.arrays(np.float32, (c_out, c_in, 3), elements=values))
    b = draw(hnp.arrays(np.float32, (c_out,), elements=values))
    return x, w, b


@settings(max_examples=40)
@given(conv_cases())
def test_conv_matches_torch_at_stride_1_and_2(conv_stem, case):
    from max.driver import Buffer
    x, w, b = case
    outs = [o.to_numpy() for o in conv_stem.execute(*(Buffer.from_numpy(np.ascontiguousarray(a))
                                                     for a in (x, conv1d_to_rscf(w), b)))]
    xt, wt, bt = (torch.from_numpy(a) for a in (x.transpose(0, 2, 1).copy(), w, b))
    for stride, got in zip((1, 2), outs):
        want = F.conv1d(xt, wt, bt, stride=stride, padding=1).permute(0, 2, 1).numpy()
        assert got.shape == want.shape == (x.shape[0], conv_out_len(x.shape[1], stride=stride), w.shape[0])
        # float32 rounding bound: ~n*eps (n <= 288 terms, eps 6e-8) of the sum of |terms|: conv(|x|, |w|) + |b|.
        bound = F.conv1d(xt.abs(), wt.abs(), bt.abs(), stride=stride, padding=1).permute(0, 2, 1).numpy()
        bad = np.abs(got - want) > 2e-5 * bound + 1e-6
        assert not bad.any(), f"stride {stride}: first bad (batch, time, channel) {np.argwhere(bad)[0].tolist()}"
