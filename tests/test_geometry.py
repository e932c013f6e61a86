"""sparsetrain.arch.geometry.ConvShape, the one conv geometry: read from nn.Conv2d it agrees with what
PyTorch computes (output size, weight shape, multiply-accumulates), and what the row decomposition
cannot run is refused with the layer's name."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sparsetrain.arch.geometry import ConvShape


def test_from_conv_agrees_with_pytorch(seed):
    rng = np.random.default_rng(seed)
    for _ in range(40):
        k = int(rng.integers(1, 6))
        c = int(rng.integers(1, 5))
        depthwise = bool(rng.integers(0, 2))
        f = c * int(rng.integers(1, 3)) if depthwise else int(rng.integers(1, 5))
        same = k % 2 == 1 and bool(rng.integers(0, 2))
        pad = "same" if same else int(rng.integers(0, k))
        stride = 1 if same else int(rng.integers(1, 3))
        h, w = int(rng.integers(k, 12)), int(rng.integers(k, 12))
        conv = nn.Conv2d(c, f, k, stride=stride, padding=pad, groups=c if depthwise else 1).double()
        x = torch.ones(2, c, h, w, dtype=torch.float64)
        s = ConvShape.from_conv(conv, tuple(x.shape), name="L")
        with torch.no_grad():
            nn.init.ones_(conv.weight)
            nn.init.zeros_(conv.bias)
            y = conv(x)
        assert s.output_shape == tuple(y.shape), (k, stride, pad, h, w)
        assert s.weight_shape == tuple(conv.weight.shape)
        # conv of ones with ones counts the products of every output: their sum over one sample is the MACs
        assert s.macs() == int(y[0].sum().item())
        assert s.with_batch(1).input_shape == (1, c, h, w) and s.name == "L"


@pytest.mark.parametrize("conv, message", [
    (nn.Conv2d(2, 2, (3, 5)), r"layer bad: kernel = 3 x 5 is not square"),
    (nn.Conv2d(2, 2, 3, stride=(1, 2)), r"layer bad: stride = \(1, 2\) is out of range; allowed: the same"),
    (nn.Conv2d(2, 2, 3, stride=3), r"layer bad: stride = 3 is out of range; allowed: 1 \.\. 2"),
    (nn.Conv2d(2, 2, 3, dilation=2), r"layer bad: dilation = \(2, 2\) is out of range"),
    (nn.Conv2d(2, 2, 3, padding=1, padding_mode="circular"), r"layer bad: padding_mode = 'circular'"),
    (nn.Conv2d(2, 2, 3, padding=(1, 0)), r"layer bad: padding = \(1, 0\) is out of range"),
    (nn.Conv2d(2, 2, 4, padding="same"), r"layer bad: padding = 'same' with K = 4"),
    (nn.Conv2d(2, 2, 3, padding=3), r"layer bad: pad = 3 is out of range; allowed: 0 \.\. 2"),
    (nn.Conv2d(4, 4, 3, groups=2), r"layer bad: groups = 2 is out of range"),
])
def test_from_conv_refuses_what_rows_cannot_run(conv, message):
    with pytest.raises(ValueError, match=message):
        ConvShape.from_conv(conv, (1, conv.in_channels, 8, 8), name="bad")


def test_input_must_match_the_conv():
    with pytest.raises(ValueError, match=r"layer x: input shape = \(1, 3, 8, 8\) does not match the layer; "
                                         r"allowed: 2 channels"):
        ConvShape.from_conv(nn.Conv2d(2, 2, 3), (1, 3, 8, 8), name="x")


def test_terms_by_step_name_or_step():
    from sparsetrain.arch.steps import Step
    s = ConvShape(3, 4, 6, 8, 8, 3, 1, 1)
    assert s.terms(Step.FORWARD) == s.terms("forward") == 4 * 9
    assert s.terms(Step.GTA) == 6 * 9 and s.terms("gtw") == 3 * 8 * 8
    with pytest.raises(ValueError, match="'back' is not a valid Step"):
        s.terms("back")
