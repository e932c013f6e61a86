"""Which conv layers the core can run: the compiler's refusals (docs/architecture.md sections 1,
2, 5 and 11).

The layer's geometry is ``sparsetrain.arch.geometry.ConvShape`` (read from an ``nn.Conv2d`` or a
golden manifest, section 9; what the row decomposition cannot express is refused there). Each
``check_*`` here raises ValueError naming the layer, the first limit of this core it exceeds and
what would do.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..arch.fixedpoint import check_param
from ..arch.geometry import ConvShape
from ..arch.steps import Step


if TYPE_CHECKING:
    from ..arch.isa import CoreParams
    from .compile import LayerData

KINDS = ("conv_relu", "conv_bn_relu")  # the blocks around a conv that the PPU completes (section 5)


def check_kind(name: str, kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"layer {name}: kind = {kind!r} is out of range; allowed: {', '.join(KINDS)}")
    return kind


def acc_bits_needed(dw: int, terms: int) -> int:
    """Section 2's compiler rule: ACC_W >= 2*DW + ceil(log2(terms)) + 1."""
    return 2 * dw + math.ceil(math.log2(max(1, terms))) + 1


def check_geometry(shape: ConvShape, *, k_max: int, w_max: int) -> None:
    """Refuse what this core's PE datapath cannot do (kernel, row lengths); ConvShape itself
    limits the stride to 1 or 2 and the padding to 0 .. K-1."""
    where = f"layer {shape.name}"
    if shape.kernel > k_max:
        raise ValueError(f"{where}: K = {shape.kernel} is out of range; allowed: 1 .. {k_max} (K_MAX of this core)")
    longest = max(shape.width, shape.out_width)
    if longest > w_max:
        raise ValueError(f"{where}: rows of {longest} columns (input {shape.width}, output {shape.out_width}) are "
                         f"out of range; allowed: up to W_MAX = {w_max} of this core")


def check_accumulator(shape: ConvShape, steps: list[Step], *, dw: int, acc_w: int, bias_preload: int = 0) -> None:
    """Refuse a step whose worst-case sum could saturate the ACC_W-bit accumulator (section 2)."""
    for step in steps:
        terms = shape.terms(step)
        need = acc_bits_needed(dw, terms)
        if step is Step.FORWARD and bias_preload:
            # A preloaded bias adds its magnitude to the worst case (golden.bitexact.rowconv.required_acc_w).
            worst = terms * ((1 << (dw - 1)) - 1) ** 2 + bias_preload
            need = max(need, worst.bit_length() + 1)
        if acc_w < need:
            raise ValueError(f"layer {shape.name}: {step.value} sums {terms} products into one result, which needs "
                             f"ACC_W >= {need} (2*DW + ceil(log2({terms})) + 1 at DW = {dw}); this core has "
                             f"ACC_W = {acc_w}: build it with ACC_W = {need} (up to 64) or run fewer samples")


def check_fits(shape: ConvShape, what: str, needed: int, have: int, param: str, limit: int) -> None:
    """Refuse a program that needs more words of a memory than the core has, naming a size that would do."""
    if needed <= have:
        return
    would = 1 << max(0, (needed - 1).bit_length())
    hint = (f"a core with {param} >= {needed} (e.g. {would}) would do" if needed <= limit
            else f"more than the largest {param} ({limit}); run fewer samples (--samples)")
    raise ValueError(f"layer {shape.name}: does not fit: needs {needed} {what}, the core has {param} = {have}; {hint}")


def check_field(shape: ConvShape, name: str, value: int, bits: int) -> None:
    check_param(f"layer {shape.name}: {name}", value, 0, (1 << bits) - 1,
                allowed=f"0 .. {(1 << bits) - 1} (a {bits}-bit instruction field; run fewer samples)")


def check_samples(shape: ConvShape, samples: int, n_all: int) -> int:
    return check_param(f"layer {shape.name}: samples", samples, 1, n_all)


def check_reproducible(data: "LayerData", params: "CoreParams") -> None:
    """Refuse a pruned layer whose run the core cannot reproduce: the core's threshold FIFO has
    N_F entries and predicts tau from the earlier batches (one pass); the PPU prunes what the run
    pruned only with the run's N_F and without two-pass pruning."""
    if not (data.pruned and data.kind == "conv_relu"):  # conv_bn_relu: dO was pruned in training
        return
    name = data.shape.name
    if data.two_pass:
        raise ValueError(f"layer {name}: two_pass = True (the run pruned each batch with its own threshold); the "
                         f"core predicts tau from a FIFO of earlier batches; allowed: a run trained without --two-pass")
    if data.n_f is not None and data.n_f != params.n_f:
        raise ValueError(f"layer {name}: N_F = {data.n_f} (the run's threshold FIFO depth) differs from the "
                         f"core's N_F = {params.n_f}; allowed: a run trained with --n-f {params.n_f}")
    if len(data.tau_fifo) > params.n_f:
        raise ValueError(f"layer {name}: fifo holds {len(data.tau_fifo)} thresholds; allowed: at most the "
                         f"core's N_F = {params.n_f}")
    if data.fifo_full and len(data.tau_fifo) != params.n_f:
        raise ValueError(f"layer {name}: fifo_full with {len(data.tau_fifo)} thresholds; allowed: exactly the "
                         f"core's N_F = {params.n_f}")
