"""The compiler: a conv layer and its tensors -> a core program, buffer image and masks.

``compile_step`` turns one layer (``LayerSpec`` from an ``nn.Conv2d`` or a golden manifest) and
its float tensors into the instructions of section 11.3 for one step (forward / gta / gtw): it
chooses the scales (section 2, ``compiler_scales``), lays out the buffer (operand rows in the
sparse row format, weight rows, one result slot per unit), emits the units of section 10.1 in
the order of ``golden.rowconv.layer_row_ops`` (the one decomposition), and refuses any layer the
core cannot run (``compiler_spec``). ``compile_layer`` / ``compile_network`` do every step of a
layer / every conv of a model. ``CompiledStep.decode`` turns the result rows back into a tensor.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .compiler_scales import StepTensors, forward_tensors, gta_tensors, gtw_tensors, tau_to_int
from .compiler_spec import (LayerSpec, check_accumulator, check_field, check_fits, check_geometry)
from .golden.ppu_model import Op as PPUOp
from .golden.ppu_model import threshold_constant
from .golden.rowconv import ConvShape, Step, layer_row_ops
from .golden.timing import Mode
from .hw.core_isa import ADDR_W, CoreParams, Opcode, encode, entry_encode

STEP_NAMES = tuple(s.value for s in Step)
STEP_INDEX = {Step.FORWARD: 0, Step.GTA: 1, Step.GTW: 2}  # SYNC step = per-step counter index
PRUNE_SLOT = 0


@dataclass
class LayerData:
    """Float tensors of one layer at one training step (golden names, section 9) and its pruning state."""

    spec: LayerSpec
    arrays: Mapping[str, np.ndarray]
    tau_fifo: Sequence[float] = ()   # FIFO contents used this step, oldest first
    fifo_full: bool = False
    pruned: bool = False
    p: float = 0.9
    estimator: str = "unbiased"
    seed: int = 1

    @classmethod
    def from_golden(cls, run: Any, name: str) -> "LayerData":
        """From ``golden.tensors.load_golden(...)``: a layer's manifest entry and arrays."""
        meta = run.layer(name)
        info = run.manifest.get("run", {})
        return cls(LayerSpec.from_manifest(name, meta), run.arrays[name], list(meta.get("fifo") or []),
                   bool(meta.get("fifo_full")), bool(meta.get("pruned")), float(info.get("p", 0.9)),
                   str(info.get("estimator", "unbiased")), int(meta.get("seed") or 1))

    def grad_output(self) -> np.ndarray:
        """The dO the conv's backward consumes: pruned where the block prunes dO (Conv-BN-ReLU)."""
        name = "dO_pruned" if self.spec.kind == "conv_bn_relu" and "dO_pruned" in self.arrays else "dO"
        return self.require(name)

    def require(self, name: str) -> np.ndarray:
        if name not in self.arrays:
            raise ValueError(f"layer {self.spec.name}: tensor {name} is missing; allowed: a golden run that "
                             f"stored {name} (has {', '.join(self.arrays)})")
        return np.asarray(self.arrays[name])


@dataclass
class ResultRow:
    """Where one unit's result row lands: directory index, buffer slot, and its place in the tensor."""

    dir: int
    out_addr: int
    index: tuple[int, int, int]   # (n, channel, row) of O / dI, or (f, weight channel, kr) of dW
    length: int


@dataclass
class CompiledStep:
    """A program for one step of one layer and everything needed to run and check it."""

    layer: str
    step: Step
    shape: ConvShape
    params: CoreParams
    program: list[int]                  # instruction words (section 11.3)
    buffer_image: list[int]             # words 0 .. len-1 of the buffer; results go above
    masks: list[int]                    # mask words (GTA)
    results: list[ResultRow]
    tensors: StepTensors
    buffer_words: int                   # operands + result slots: the buffer this program needs
    samples: int                        # batch samples compiled
    regions: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (start, words)
    threshold: dict[str, int] = field(default_factory=dict)           # GTA: tau ints, C_m, C_shift
    n_ops: int = 0                      # row operations (OP words)

    @property
    def result_name(self) -> str:
        return self.tensors.result_name

    @property
    def result_shape(self) -> tuple[int, ...]:
        return {Step.FORWARD: self.shape.output_shape, Step.GTA: self.shape.input_shape,
                Step.GTW: self.shape.weight_shape}[self.step]

    @property
    def n_units(self) -> int:
        return len(self.results)

    def decode(self, row_of: Callable[[ResultRow], np.ndarray]) -> np.ndarray:
        """The integer result tensor from a function giving each unit's dense result row."""
        out = np.zeros(self.result_shape, dtype=np.int64)
        for r in self.results:
            out[r.index] = row_of(r)
        return out


# ----------------------------------------------------------------------------- buffer layout

class _Buffer:
    """Word allocator for the buffer image (operands) and the result slots above it."""

    def __init__(self, params: CoreParams) -> None:
        self.p = params
        self.words: list[int] = []
        self.regions: dict[str, tuple[int, int]] = {}

    def rows(self, name: str, q: np.ndarray, keep_zeros: bool = False) -> np.ndarray:
        """Every row of a 4-D integer tensor in the sparse row format; returns the start addresses.

        keep_zeros stores every column (weight rows: exactly K words, offsets 0..K-1)."""
        start = len(self.words)
        addrs = np.zeros(q.shape[:-1], dtype=np.int64)
        p = self.p
        end = p.off_end
        flat = q.reshape(-1, q.shape[-1])
        out = self.words
        for i, row in enumerate(flat):
            addrs.flat[i] = len(out)
            cols = np.arange(row.size) if keep_zeros else np.flatnonzero(row)
            if cols.size == 0:
                out.append(entry_encode(0, end, 1, p))
                continue
            last = cols.size - 1
            out.extend(entry_encode(int(row[c]), int(c), int(j == last), p) for j, c in enumerate(cols))
        self.regions[name] = (start, len(out) - start)
        return addrs


# ----------------------------------------------------------------------------- compilation

def compile_step(data: LayerData, step: Step | str, params: CoreParams, *, samples: int | None = None) -> CompiledStep:
    """Program, buffer image and masks for one step of one layer (first ``samples`` of the batch)."""
    step = Step(step) if not isinstance(step, Step) else step
    spec = data.spec
    x = data.require("I")
    if x.ndim != 4:
        raise ValueError(f"layer {spec.name}: I shape = {x.shape} is out of range; allowed: (N, C, H, W)")
    n_all = x.shape[0]
    n = n_all if samples is None else _check_samples(spec, samples, n_all)
    check_geometry(spec, k_max=params.k_max, w_max=params.w_max, height=x.shape[2], width=x.shape[3])
    shape = spec.conv_shape(n, x.shape[2], x.shape[3])
    x = x[:n]
    w = data.require("W")
    if tuple(w.shape) != shape.weight_shape:
        raise ValueError(f"layer {spec.name}: W shape = {tuple(w.shape)} does not match the layer; allowed: "
                         f"{shape.weight_shape}")
    dw, acc_w = params.dw, params.acc_w
    if step is Step.FORWARD:
        b = data.require("b") if spec.bias else None
        t = forward_tensors(shape, x, w, b, relu=spec.kind == "conv_relu", dw=dw, acc_w=acc_w)
        preload = int(np.max(np.abs(t.bias_preload))) if t.bias_preload is not None and t.bias_preload.size else 0
        check_accumulator(spec, shape, [step], dw=dw, acc_w=acc_w, bias_preload=preload)
    else:
        g = data.grad_output()[:n]
        if tuple(g.shape) != shape.output_shape:
            raise ValueError(f"layer {spec.name}: dO shape = {tuple(g.shape)} does not match the layer; allowed: "
                             f"{shape.output_shape}")
        check_accumulator(spec, shape, [step], dw=dw, acc_w=acc_w)
        if step is Step.GTA:
            t = gta_tensors(shape, g, w, gta_mask(data, x), dw=dw, acc_w=acc_w)
        else:
            t = gtw_tensors(shape, x, g, dw=dw, acc_w=acc_w)
    return _emit(data, step, shape, params, t, n)


def gta_mask(data: LayerData, x: np.ndarray) -> np.ndarray:
    """Wanted dI columns: the input's non-zeros (the previous ReLU's mask, as the perf model uses)."""
    return np.asarray(x) != 0


def _check_samples(spec: LayerSpec, samples: int, n_all: int) -> int:
    from .golden.fixedpoint import check_param
    return check_param(f"layer {spec.name}: samples", samples, 1, n_all)


def _emit(data: LayerData, step: Step, shape: ConvShape, p: CoreParams, t: StepTensors, n: int) -> CompiledStep:
    spec = data.spec
    buf = _Buffer(p)
    k, s, pad = shape.kernel, shape.stride, shape.pad
    masks: list[int] = []
    threshold: dict[str, int] = {}
    prog: list[int] = []
    if step is Step.FORWARD:
        a_in = buf.rows("I", t.q["I"])
        a_w = buf.rows("W", t.q["W"], keep_zeros=True)
        length = shape.out_width
    elif step is Step.GTA:
        a_g = buf.rows("dO", t.q["dO"])
        a_w = buf.rows("W", t.q["W"], keep_zeros=True)
        length = shape.width
        mask_index: dict[int, int] = {}
        mask_of = np.zeros(shape.input_shape[:-1], dtype=np.int64)
        bits = (1 << np.arange(shape.width, dtype=object))
        for idx in np.ndindex(*shape.input_shape[:-1]):
            word = int(np.sum(bits[t.mask[idx]])) if t.mask[idx].any() else 0
            mask_of[idx] = mask_index.setdefault(word, len(mask_index))
        masks = list(mask_index)
        prog += _threshold_program(data, t, p, threshold, n, shape)
    else:
        a_in = buf.rows("I", t.q["I"])
        a_g = buf.rows("dO", t.q["dO"])
        length = k
    operands = len(buf.words)

    # One result slot of `length` words per unit (a compressed row never needs more).
    units = _units(shape, step)
    results: list[ResultRow] = []
    out_base = operands
    prog.append(encode(Opcode.SYNC, step=STEP_INDEX[step]))
    n_ops_total = 0
    mode = step.mode
    stride2 = int(s == 2)
    relu = int(step is Step.FORWARD and spec.kind == "conv_relu")
    prune = int(step is Step.GTA and data.pruned and spec.kind == "conv_relu")
    for u, (key, ops) in enumerate(units):
        out_addr = out_base + u * length
        unit = dict(n_ops=len(ops), dir=u, out_addr=min(out_addr, (1 << ADDR_W) - 1), length=length,
                    shift=t.shift, relu=relu, gta=int(step is Step.GTA), prune=prune, slot=PRUNE_SLOT)
        if step is Step.FORWARD and t.bias_preload is not None:
            unit.update(bias_en=1, bias=int(t.bias_preload[key[1]]))
        check_field(spec, "n_ops of a unit", len(ops), 16)
        check_field(spec, "units (dir)", u, 16)
        prog.append(encode(Opcode.UNIT, **unit))
        for op in ops:
            wc = shape.weight_channel(op.c)
            if step is Step.FORWARD:
                f = dict(in_len=shape.width, out_len=shape.out_width, addr1=int(a_in[op.n, op.c, op.in_row]),
                         addr2=int(a_w[op.f, wc, op.kr]))
            elif step is Step.GTA:
                f = dict(in_len=shape.out_width, out_len=shape.width, addr1=int(a_g[op.n, op.f, op.out_row]),
                         addr2=int(a_w[op.f, wc, op.kr]), mask_addr=int(mask_of[op.n, op.c, op.in_row]))
            else:
                f = dict(in_len=shape.width, out_len=shape.out_width, addr1=int(a_in[op.n, op.c, op.in_row]),
                         addr2=int(a_g[op.n, op.f, op.out_row]))
            prog.append(encode(Opcode.OP, mode=int(mode), k=k, stride2=stride2, pad=pad, **f))
        n_ops_total += len(ops)
        index = (key[0], key[1], key[2])
        results.append(ResultRow(u, out_addr, index, length))
    prog.append(encode(Opcode.END))
    needed = operands + len(units) * length
    check_fits(spec, f"buffer words for {step.value} ({operands} operand words + {len(units)} result rows of "
                     f"{length})", needed, p.buf_depth, "BUF_DEPTH", 1 << ADDR_W)
    check_fits(spec, "instruction words", len(prog), p.imem_depth, "IMEM_DEPTH", 1 << 20)
    check_fits(spec, "row-directory entries (one per result row)", len(units), p.dir_depth, "DIR_DEPTH", 1 << 16)
    check_fits(spec, "mask words", len(masks), p.mask_depth, "MASK_DEPTH", 1 << 16)
    regions = dict(buf.regions)
    regions["results"] = (operands, needed - operands)
    return CompiledStep(spec.name, step, shape, p, prog, buf.words, masks, results, t, needed, n, regions, threshold,
                        n_ops_total)


def _units(shape: ConvShape, step: Step) -> list[tuple[tuple[int, int, int], list]]:
    """Consecutive ops of layer_row_ops with the same result row (section 10.1), in issue order."""
    units: list[tuple[tuple[int, int, int], list]] = []
    for op in layer_row_ops(shape, step):
        if step is Step.FORWARD:
            key = (op.n, op.f, op.out_row)
        elif step is Step.GTA:
            key = (op.n, op.c, op.in_row)
        else:
            key = (op.f, shape.weight_channel(op.c), op.kr)
        if units and units[-1][0] == key:
            units[-1][1].append(op)
        else:
            units.append((key, [op]))
    return units


def _threshold_program(data: LayerData, t: StepTensors, p: CoreParams, threshold: dict[str, int], n: int,
                       shape: ConvShape) -> list[int]:
    """GTA of a pruned layer: restore the layer's threshold FIFO in every PPU, seed the generators.

    The FIFO holds the golden run's thresholds converted to dI's integer scale; C_m/C_shift
    (c_p / n for this batch's n gradients) are kept for the host's end-of-batch threshold.
    """
    prog = [encode(Opcode.PPU, all=1, op=int(PPUOp.CLEAR_SLOT), slot=PRUNE_SLOT)]
    taus = [tau_to_int(v, t.frac["dI"], p.dw) for v in data.tau_fifo][-p.n_f:]
    for v in taus:
        prog.append(encode(Opcode.PPU, all=1, op=int(PPUOp.PUSH_TAU), slot=PRUNE_SLOT, value=v))
    for g in range(p.groups):  # one distinct, reproducible stream per PPU
        prog.append(encode(Opcode.PPU, group=g, op=int(PPUOp.SEED), value=_group_seed(data.seed, g)))
    c_m, c_shift = threshold_constant(data.p, int(np.prod(shape.input_shape)), data.estimator)
    threshold.update(c_m=c_m, c_shift=c_shift, fifo=taus, fifo_full=int(len(taus) == p.n_f))
    return prog


def _group_seed(layer_seed: int, group: int) -> int:
    """A non-zero 32-bit xorshift seed per (layer, group)."""
    v = (0x9E3779B9 * (int(layer_seed) + 1) + 0x85EBCA6B * (group + 1)) & 0xFFFFFFFF
    return v or 1


def compile_layer(data: LayerData, params: CoreParams, *, steps: Sequence[Step | str] = STEP_NAMES,
                  samples: int | None = None) -> dict[Step, CompiledStep]:
    return {Step(s): compile_step(data, s, params, samples=samples) for s in steps}


def compile_network(model: Any, layers: Mapping[str, LayerData], params: CoreParams, *,
                    steps: Sequence[Step | str] = STEP_NAMES, samples: int | None = None,
                    first_has_gta: bool = False) -> dict[str, dict[Step, CompiledStep]]:
    """Every conv of ``model`` (golden.networks.conv_layers order) that has tensors in ``layers``.

    The network's first conv has no GTA (section 10.1) unless ``first_has_gta``. A layer the
    core cannot run raises ValueError naming it and the reason.
    """
    from .golden.networks import conv_layers
    out: dict[str, dict[Step, CompiledStep]] = {}
    for i, (name, conv, kind) in enumerate(conv_layers(model)):
        if name not in layers:
            continue
        data = layers[name]
        spec = LayerSpec.from_conv(name, conv, kind)
        if spec != data.spec:
            data = LayerData(spec, data.arrays, data.tau_fifo, data.fifo_full, data.pruned, data.p,
                             data.estimator, data.seed)
        want = [Step(s) for s in steps if not (Step(s) is Step.GTA and i == 0 and not first_has_gta)]
        out[name] = compile_layer(data, params, steps=want, samples=samples)
    return out
