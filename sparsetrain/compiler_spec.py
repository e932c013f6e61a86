"""Which conv layers the core can run: geometry of a layer and the compiler's refusals.

A ``LayerSpec`` is the geometry of one conv layer, taken from an ``nn.Conv2d`` (with its block
kind from ``golden.training.networks.conv_layers``) or from a golden manifest (section 9).
``check_layer`` raises ValueError naming the first reason the hardware cannot run it
(docs/architecture.md sections 1, 2, 5 and 11).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .arch.fixedpoint import check_param
from .arch.steps import Step
from .golden.bitexact.rowconv import ConvShape

KINDS = ("conv_relu", "conv_bn_relu")


@dataclass(frozen=True)
class LayerSpec:
    """Geometry of one conv layer as PyTorch describes it (pairs where PyTorch has pairs)."""

    name: str
    kind: str
    in_channels: int
    out_channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    bias: bool = True
    padding_mode: str = "zeros"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"layer {self.name}: kind = {self.kind!r} is out of range; allowed: {', '.join(KINDS)}")

    @classmethod
    def from_conv(cls, name: str, conv: Any, kind: str) -> "LayerSpec":
        """From an nn.Conv2d (duck-typed, so no torch import is needed here)."""
        padding = conv.padding
        if isinstance(padding, str):  # 'same' / 'valid' as PyTorch allows
            raise ValueError(f"layer {name}: padding = {padding!r} is out of range; allowed: explicit integers")
        return cls(name, kind, int(conv.in_channels), int(conv.out_channels), _pair(conv.kernel_size),
                   _pair(conv.stride), _pair(padding), _pair(conv.dilation), int(conv.groups),
                   conv.bias is not None, str(getattr(conv, "padding_mode", "zeros")))

    @classmethod
    def from_manifest(cls, name: str, entry: dict[str, Any]) -> "LayerSpec":
        """From a golden manifest entry (section 9): W's shape gives the channels and kernel."""
        f, cg, kh, kw = entry["arrays"]["W"]["shape"]
        c = entry["arrays"]["I"]["shape"][1]
        s, p = int(entry.get("stride", 1)), int(entry.get("padding", 0))
        return cls(name, entry["kind"], int(c), int(f), (int(kh), int(kw)), (s, s), (p, p), (1, 1),
                   int(entry.get("groups", 1)), "b" in entry["arrays"])

    @property
    def k(self) -> int:
        return self.kernel[0]

    def conv_shape(self, batch: int, height: int, width: int) -> ConvShape:
        return ConvShape(batch, self.in_channels, self.out_channels, height, width, self.k, self.stride[0],
                         self.padding[0], self.groups)


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return int(v[0]), int(v[1])
    return int(v), int(v)


def acc_bits_needed(dw: int, terms: int) -> int:
    """Section 2's compiler rule: ACC_W >= 2*DW + ceil(log2(terms)) + 1."""
    return 2 * dw + math.ceil(math.log2(max(1, terms))) + 1


def check_geometry(spec: LayerSpec, *, k_max: int, w_max: int, height: int, width: int) -> None:
    """Refuse what the PE datapath cannot do (kernel, stride, dilation, groups, padding, row lengths)."""
    where = f"layer {spec.name}"
    kh, kw = spec.kernel
    if kh != kw:
        raise ValueError(f"{where}: kernel = {kh} x {kw} is not square; allowed: K x K (the PE runs one "
                         f"kernel row of K weights per op)")
    if kh > k_max:
        raise ValueError(f"{where}: K = {kh} is out of range; allowed: 1 .. {k_max} (K_MAX of this core)")
    if spec.stride[0] != spec.stride[1] or spec.stride[0] not in (1, 2):
        raise ValueError(f"{where}: stride = {spec.stride} is out of range; allowed: 1 or 2, the same in both "
                         f"dimensions")
    if spec.dilation != (1, 1):
        raise ValueError(f"{where}: dilation = {spec.dilation} is out of range; allowed: (1, 1) (the PE has no "
                         f"dilated row operation)")
    if spec.groups not in (1, spec.in_channels):
        raise ValueError(f"{where}: groups = {spec.groups} is out of range; allowed: 1 or {spec.in_channels} "
                         f"(ordinary or depthwise)")
    if spec.padding[0] != spec.padding[1] or not 0 <= spec.padding[0] <= kh - 1:
        raise ValueError(f"{where}: padding = {spec.padding} is out of range; allowed: the same P in both "
                         f"dimensions, 0 .. {kh - 1} (K-1)")
    if spec.padding_mode != "zeros":
        raise ValueError(f"{where}: padding_mode = {spec.padding_mode!r} is out of range; allowed: 'zeros'")
    shape = spec.conv_shape(1, height, width)
    longest = max(width, shape.out_width)
    if longest > w_max:
        raise ValueError(f"{where}: rows of {longest} columns (input {width}, output {shape.out_width}) are out "
                         f"of range; allowed: up to W_MAX = {w_max} of this core")


def check_accumulator(spec: LayerSpec, shape: ConvShape, steps: list[Step], *, dw: int, acc_w: int,
                      bias_preload: int = 0) -> None:
    """Refuse a step whose worst-case sum could saturate the ACC_W-bit accumulator (section 2)."""
    for step in steps:
        terms = shape.terms(step)
        need = acc_bits_needed(dw, terms)
        if step is Step.FORWARD and bias_preload:
            # A preloaded bias adds its magnitude to the worst case (golden.bitexact.rowconv.required_acc_w).
            worst = terms * ((1 << (dw - 1)) - 1) ** 2 + bias_preload
            need = max(need, worst.bit_length() + 1)
        if acc_w < need:
            raise ValueError(f"layer {spec.name}: {step.value} sums {terms} products into one result, which needs "
                             f"ACC_W >= {need} (2*DW + ceil(log2({terms})) + 1 at DW = {dw}); this core has "
                             f"ACC_W = {acc_w}: build it with ACC_W = {need} (up to 64) or run fewer samples")


def check_fits(spec: LayerSpec, what: str, needed: int, have: int, param: str, limit: int) -> None:
    """Refuse a program that needs more words of a memory than the core has, naming a size that would do."""
    if needed <= have:
        return
    would = 1 << max(0, (needed - 1).bit_length())
    hint = (f"a core with {param} >= {needed} (e.g. {would}) would do" if needed <= limit
            else f"more than the largest {param} ({limit}); run fewer samples (--samples)")
    raise ValueError(f"layer {spec.name}: does not fit: needs {needed} {what}, the core has {param} = {have}; {hint}")


def check_field(spec: LayerSpec, name: str, value: int, bits: int) -> None:
    check_param(f"layer {spec.name}: {name}", value, 0, (1 << bits) - 1,
                allowed=f"0 .. {(1 << bits) - 1} (a {bits}-bit instruction field; run fewer samples)")
