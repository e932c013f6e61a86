"""Scales, integer tensors, float64 references and error bounds of one layer step (section 2).

The frac bits follow the scale rule of section 2 (``sparsetrain.arch.fixedpoint.choose_frac_bits``); a
result's frac bits are chosen from its float64 reference and limited to a requantisation shift
of ``0 .. ACC_W-1``. References and the element-wise bound sums use torch in float64 (the same
mathematics as golden.bitexact.rowconv's float path, which is too slow per row for whole layers); the
bound itself is ``golden.bitexact.rowconv.error_bound``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .arch.fixedpoint import FRAC_MIN, choose_frac_bits, quantize, sat_limit
from .arch.steps import Step
from .golden.bitexact.rowconv import ConvShape, error_bound


@dataclass
class StepTensors:
    """Integer operands of one step with their frac bits, and the result's reference and bound."""

    step: Step
    frac: dict[str, int]                 # frac bits of every operand and of the result
    q: dict[str, np.ndarray]             # integer operands (int64): I, W, dO, b as the step needs
    mask: np.ndarray | None              # GTA: wanted dI columns (bool, shape of I)
    result_name: str                     # O, dI or dW
    reference: np.ndarray                # float64 result of the float operands (ReLU'd for forward+relu)
    bound: np.ndarray                    # element-wise bound of |model - reference| (section 2)
    shift: int                           # requantisation shift f_acc - f_out
    bias_preload: np.ndarray | None = None  # forward: accumulator start value per output channel
    extra: dict[str, float] = field(default_factory=dict)


def out_frac(reference: np.ndarray, frac_acc: int, dw: int, acc_w: int) -> int:
    """Scale rule on the float result, limited to a shift of 0 .. ACC_W-1 below frac_acc."""
    return max(frac_acc - (acc_w - 1), FRAC_MIN, min(choose_frac_bits(reference, dw), frac_acc))


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))


def _conv(shape: ConvShape, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return F.conv2d(_t(x), _t(w), stride=shape.stride, padding=shape.pad, groups=shape.groups).numpy()


def _conv_input(shape: ConvShape, g: np.ndarray, w: np.ndarray) -> np.ndarray:
    return torch.nn.grad.conv2d_input(shape.input_shape, _t(w), _t(g), stride=shape.stride, padding=shape.pad,
                                      groups=shape.groups).numpy()


def _conv_weight(shape: ConvShape, x: np.ndarray, g: np.ndarray) -> np.ndarray:
    return torch.nn.grad.conv2d_weight(_t(x), shape.weight_shape, _t(g), stride=shape.stride, padding=shape.pad,
                                       groups=shape.groups).numpy()


def forward_tensors(shape: ConvShape, x: np.ndarray, w: np.ndarray, b: np.ndarray | None, *, relu: bool,
                    dw: int, acc_w: int) -> StepTensors:
    fi, fw = choose_frac_bits(x, dw), choose_frac_bits(w, dw)
    frac = {"I": fi, "W": fw}
    q = {"I": quantize(x, fi, dw), "W": quantize(w, fw, dw)}
    ref = _conv(shape, x, w)
    preload = None
    if b is not None:
        frac["b"] = min(choose_frac_bits(b, dw), fi + fw)
        q["b"] = quantize(b, frac["b"], dw)
        preload = q["b"].astype(np.int64) << (fi + fw - frac["b"])  # exact (section 2)
        ref = ref + np.asarray(b, np.float64)[None, :, None, None]
    fo = out_frac(ref, fi + fw, dw, acc_w)
    frac["O"] = fo
    ones_x, ones_w = np.ones_like(x, np.float64), np.ones_like(w, np.float64)
    bound = error_bound(_conv(shape, ones_x, np.abs(w)), _conv(shape, np.abs(x), ones_w),
                        _conv(shape, ones_x, ones_w), fi, fw, fo)
    if b is not None:
        bound = bound + 2.0 ** -(frac["b"] + 1)
    if relu:
        ref = np.maximum(ref, 0.0)  # ReLU is 1-Lipschitz: the bound still holds
    return StepTensors(Step.FORWARD, frac, q, None, "O", ref, bound, fi + fw - fo, preload)


def gta_tensors(shape: ConvShape, g: np.ndarray, w: np.ndarray, mask: np.ndarray, *, dw: int,
                acc_w: int) -> StepTensors:
    fg, fw = choose_frac_bits(g, dw), choose_frac_bits(w, dw)
    frac = {"dO": fg, "W": fw}
    q = {"dO": quantize(g, fg, dw), "W": quantize(w, fw, dw)}
    m = mask.astype(np.float64)
    ref = _conv_input(shape, g, w) * m
    fo = out_frac(ref, fg + fw, dw, acc_w)
    frac["dI"] = fo
    ones_g, ones_w = np.ones_like(g, np.float64), np.ones_like(w, np.float64)
    bound = error_bound(_conv_input(shape, ones_g, np.abs(w)) * m, _conv_input(shape, np.abs(g), ones_w) * m,
                        _conv_input(shape, ones_g, ones_w) * m, fg, fw, fo)
    return StepTensors(Step.GTA, frac, q, mask.astype(bool), "dI", ref, bound, fg + fw - fo)


def gtw_tensors(shape: ConvShape, x: np.ndarray, g: np.ndarray, *, dw: int, acc_w: int) -> StepTensors:
    fi, fg = choose_frac_bits(x, dw), choose_frac_bits(g, dw)
    frac = {"I": fi, "dO": fg}
    q = {"I": quantize(x, fi, dw), "dO": quantize(g, fg, dw)}
    ref = _conv_weight(shape, x, g)
    fo = out_frac(ref, fi + fg, dw, acc_w)
    frac["dW"] = fo
    ones_x, ones_g = np.ones_like(x, np.float64), np.ones_like(g, np.float64)
    bound = error_bound(_conv_weight(shape, ones_x, np.abs(g)), _conv_weight(shape, np.abs(x), ones_g),
                        _conv_weight(shape, ones_x, ones_g), fi, fg, fo)
    return StepTensors(Step.GTW, frac, q, None, "dW", ref, bound, fi + fg - fo)


def tau_to_int(tau: float, frac: int, dw: int) -> int:
    """A float threshold in the gradient's integer scale: DW-1-bit unsigned, round half to even."""
    v = int(np.rint(float(tau) * 2.0 ** frac))
    return max(0, min(sat_limit(dw), v))
