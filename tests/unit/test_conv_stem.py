"""The encoder's conv1d (NHWC conv2d with an RSCF filter) against torch, over random lengths,
channel counts and values: one symbolic graph, compiled once per device. Guards upstream CPU conv2d
bugs (boundary rows with zero padding, C_in >= 8, width padding). Every value is drawn (a numpy
generator seeded by Hypothesis), at a drawn scale and offset, with exact zeros and large values mixed in.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from maxwhisper.layout import conv1d_to_rscf, conv_out_len

pytestmark = pytest.mark.unit


@pytest.fixture(scope="session", params=["cpu", pytest.param("gpu", marks=pytest.mark.gpu)])
def conv_stem(request):
    from maxwhisper.encoder import load_conv_stem
    from maxwhisper.session import max_device
    return request.param, max_device(request.param), load_conv_stem(request.param)


def dense(rng: np.random.Generator, shape: tuple[int, ...], scale: float, offset: float) -> np.ndarray:
    """Normal values at `scale` around `offset`, with ~5% exact zeros and ~1% values 100x larger."""
    x = rng.normal(offset, scale, shape)
    x[rng.random(shape) < 0.05] = 0.0
    x[rng.random(shape) < 0.01] *= 100
    return x.astype(np.float32)


@st.composite
def conv_cases(draw):
    batch, length = draw(st.integers(1, 3)), draw(st.integers(1, 700))
    c_in, c_out = draw(st.integers(1, 96)), draw(st.integers(1, 48))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale, offset = draw(st.sampled_from([1e-3, 0.1, 1.0, 4.0])), draw(st.floats(-2, 2))
    return (dense(rng, (batch, length, c_in), scale, offset), dense(rng, (c_out, c_in, 3), 1.0, 0.0),
            dense(rng, (c_out,), 1.0, 0.0))


@settings(max_examples=40)
@given(conv_cases())
def test_conv_matches_torch_at_stride_1_and_2(conv_stem, case):
    from max.driver import CPU, Buffer
    device, dev, model = conv_stem
    x, w, b = case
    inputs = [Buffer.from_numpy(np.ascontiguousarray(a)).to(dev) for a in (x, conv1d_to_rscf(w), b)]
    outs = [o.to(CPU()).to_numpy() for o in model.execute(*inputs)]
    xt, wt, bt = (torch.from_numpy(a).double() for a in (x.transpose(0, 2, 1).copy(), w, b))
    for stride, got in zip((1, 2), outs):
        want = F.conv1d(xt, wt, bt, stride=stride, padding=1).permute(0, 2, 1).numpy()
        assert got.shape == want.shape == (x.shape[0], conv_out_len(x.shape[1], stride=stride), w.shape[0])
        # float32 rounding bound against a float64 reference: ~n*eps (n <= 289 terms, eps 6e-8) of the sum
        # of |terms|, conv(|x|, |w|) + |b|. Measured worst on CPU over 60 such cases: 1.6e-6 of that sum;
        # a wrong tap, row or channel is off by a whole term.
        bound = F.conv1d(xt.abs(), wt.abs(), bt.abs(), stride=stride, padding=1).permute(0, 2, 1).numpy()
        bad = np.abs(got - want) > 2e-5 * bound + 1e-6
        assert not bad.any(), f"{device} stride {stride}: first bad (batch, time, channel) {np.argwhere(bad)[0].tolist()}"
