"""The compiler: a conv layer and its tensors -> a core program, buffer image and masks.

``compile_step`` turns one layer (``LayerSpec`` from an ``nn.Conv2d`` or a golden manifest) and
its float tensors into the instructions of section 11.3 for one step (forward / gta / gtw): it
chooses the scales (section 2, ``compiler_scales``), lays out the buffer (operand rows in the
sparse row format, weight rows, one result slot per unit), emits the units of section 10.1 in
the order of ``golden.bitexact.rowconv.layer_row_ops`` (the one decomposition), and refuses any layer the
core cannot run (``compiler_spec``). ``compile_layer`` / ``compile_network`` do every step of a
layer / every conv of a model. ``CompiledStep.decode`` turns the result rows back into a tensor.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .arch.isa import CoreParams, Opcode, encode, entry_encode, field_position
from .arch.ppu import Op as PPUOp
from .arch.steps import Step
from .compiler_scales import StepTensors, forward_tensors, gta_tensors, gtw_tensors, tau_to_int
from .compiler_spec import (LayerSpec, check_accumulator, check_field, check_fits, check_geometry)
from .golden.bitexact.ppu_model import threshold_constant
from .golden.bitexact.rowconv import ConvShape, layer_row_ops_tuple
from .golden.training.campfire import find_masks, load_masks, weight_row_ops

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
    # Campfire: (F, C/g, K) kernel rows the run's weight masks pruned; their GTW units are skipped
    pruned_rows: np.ndarray | None = None
    # the run's threshold FIFO depth and two-pass flag (manifest "run"); None: not recorded
    n_f: int | None = None
    two_pass: bool = False

    @classmethod
    def from_golden(cls, run: Any, name: str) -> "LayerData":
        """From ``golden.training.tensors.load_golden(...)``: a layer's manifest entry and arrays (and the
        run's weight masks, when the golden directory lies in a Campfire run directory)."""
        meta = run.layer(name)
        info = run.manifest.get("run", {})
        masks_dir = find_masks(run.path) if getattr(run, "path", None) is not None else None
        mask = load_masks(masks_dir).get(f"{name}/weight") if masks_dir is not None else None
        return cls(LayerSpec.from_manifest(name, meta), run.arrays[name], list(meta.get("fifo") or []),
                   bool(meta.get("fifo_full")), bool(meta.get("pruned")), float(info.get("p", 0.9)),
                   str(info.get("estimator", "unbiased")), int(meta.get("seed") or 1),
                   None if mask is None else ~mask.any(axis=3),
                   None if info.get("N_F") is None else int(info["N_F"]), bool(info.get("two_pass", False)))

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
    """Where one unit's result row lands: program chunk, directory index, buffer slot, tensor place."""

    chunk: int
    dir: int
    out_addr: int
    index: tuple[int, int, int]   # (n, channel, row) of O / dI, or (f, weight channel, kr) of dW
    length: int


@dataclass
class Chunk:
    """One program that fits the core's memories: a run of consecutive units of the step."""

    program: list[int]                  # instruction words (section 11.3)
    buffer_image: list[int]             # operand rows (words 0 .. len-1); result slots lie above
    masks: list[int]                    # mask words its MSRC ops use
    results: list[ResultRow]
    buffer_words: int                   # operands + result slots
    n_ops: int


@dataclass
class CompiledStep:
    """The programs for one step of one layer and everything needed to run and check them.

    A layer whose operands, results, instructions, directory entries or masks exceed the core's
    memories is split into chunks of whole units (each chunk one program run); a unit (one
    result row) never spans chunks, so every chunk's results are final.
    """

    layer: str
    step: Step
    shape: ConvShape
    params: CoreParams
    chunks: list[Chunk]
    tensors: StepTensors
    samples: int                        # batch samples compiled
    single_program_words: dict[str, int]  # what one program for the whole step would need
    threshold: dict[str, int] = field(default_factory=dict)  # GTA: tau ints, C_m, C_shift
    # Kernel rows the program runs (golden.training.campfire.weight_row_ops): non-zero rows of W for
    # Forward / GTA, rows the weight masks kept for GTW; None: every row. Ops / units left out:
    live_rows: np.ndarray | None = None
    skipped_ops: int = 0
    skipped_units: int = 0

    def _single(self) -> Chunk:
        if len(self.chunks) != 1:
            raise ValueError(f"layer {self.layer} {self.step.value} is split into {len(self.chunks)} programs; "
                             f"allowed: use .chunks")
        return self.chunks[0]

    @property
    def program(self) -> list[int]:
        return self._single().program

    @property
    def buffer_image(self) -> list[int]:
        return self._single().buffer_image

    @property
    def masks(self) -> list[int]:
        return self._single().masks

    @property
    def buffer_words(self) -> int:
        return max(c.buffer_words for c in self.chunks)

    @property
    def results(self) -> list[ResultRow]:
        return [r for c in self.chunks for r in c.results]

    @property
    def n_ops(self) -> int:
        return sum(c.n_ops for c in self.chunks)

    @property
    def instructions(self) -> int:
        return sum(len(c.program) for c in self.chunks)

    @property
    def result_name(self) -> str:
        return self.tensors.result_name

    @property
    def result_shape(self) -> tuple[int, ...]:
        return {Step.FORWARD: self.shape.output_shape, Step.GTA: self.shape.input_shape,
                Step.GTW: self.shape.weight_shape}[self.step]

    @property
    def n_units(self) -> int:
        return sum(len(c.results) for c in self.chunks)

    def decode(self, row_of: Callable[[ResultRow], np.ndarray]) -> np.ndarray:
        """The integer result tensor from a function giving each unit's dense result row."""
        out = np.zeros(self.result_shape, dtype=np.int64)
        for r in self.results:
            out[r.index] = row_of(r)
        return out


# ----------------------------------------------------------------------------- buffer layout

def encode_row(row: np.ndarray, p: CoreParams, keep_zeros: bool = False) -> list[int]:
    """One row in the sparse row format (section 3) as buffer words; keep_zeros: every column
    (a weight row: exactly K words, offsets 0..K-1, last on the K-th)."""
    cols = np.arange(row.size) if keep_zeros else np.flatnonzero(row)
    if cols.size == 0:
        return [entry_encode(0, p.off_end, 1, p)]
    last = cols.size - 1
    return [entry_encode(int(row[c]), int(c), int(j == last), p) for j, c in enumerate(cols)]


def _row_words(q: np.ndarray) -> np.ndarray:
    """Buffer words of every row of a 4-D tensor: its non-zeros, or the one empty-row marker."""
    return np.maximum(1, np.count_nonzero(q, axis=-1))


# ----------------------------------------------------------------------------- compilation

def check_reproducible(data: LayerData, params: CoreParams) -> None:
    """Refuse a pruned layer whose run the core cannot reproduce: the core's threshold FIFO has
    N_F entries and predicts tau from the earlier batches (one pass); the PPU prunes what the run
    pruned only with the run's N_F and without two-pass pruning."""
    if not (data.pruned and data.spec.kind == "conv_relu"):  # conv_bn_relu: dO was pruned in training
        return
    name = data.spec.name
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


def compile_step(data: LayerData, step: Step | str, params: CoreParams, *, samples: int | None = None,
                 skip_weight_rows: bool = True) -> CompiledStep:
    """Programs, buffer images and masks for one step of one layer (first ``samples`` of the batch).

    ``skip_weight_rows``: leave out the row ops of all-zero kernel rows (Forward, GTA) and the GTW
    units of kernel rows the weight masks pruned (``data.pruned_rows``); results stay bit-exact
    (GTW: a pruned row's gradient is 0, as the training's gradient mask makes it)."""
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
            check_reproducible(data, params)
            t = gta_tensors(shape, g, w, gta_mask(data, x), dw=dw, acc_w=acc_w)
        else:
            t = gtw_tensors(shape, x, g, dw=dw, acc_w=acc_w)
            if skip_weight_rows and data.pruned_rows is not None:
                t = replace(t, reference=np.where(_pruned(data, shape)[..., None], 0.0, t.reference))
    return _emit(data, step, shape, params, t, n, skip_weight_rows)


def _pruned(data: LayerData, shape: ConvShape) -> np.ndarray:
    rows = np.asarray(data.pruned_rows, dtype=bool)
    want = shape.weight_shape[:3]
    if rows.shape != want:
        raise ValueError(f"layer {data.spec.name}: pruned_rows shape = {rows.shape} does not match the layer; "
                         f"allowed: {want}")
    return rows


def live_rows(data: LayerData, step: Step, shape: ConvShape, t: StepTensors) -> np.ndarray | None:
    """Kernel rows a step must run: W's non-zero rows (Forward, GTA), the unpruned ones (GTW)."""
    if step is Step.GTW:
        return None if data.pruned_rows is None else ~_pruned(data, shape)
    return np.asarray(t.q["W"] != 0).any(axis=3)


def gta_mask(data: LayerData, x: np.ndarray) -> np.ndarray:
    """Wanted dI columns: the input's non-zeros (the previous ReLU's mask, as the perf model uses)."""
    return np.asarray(x) != 0


def _check_samples(spec: LayerSpec, samples: int, n_all: int) -> int:
    from .arch.fixedpoint import check_param
    return check_param(f"layer {spec.name}: samples", samples, 1, n_all)


def _mask_words(mask: np.ndarray) -> np.ndarray:
    """Every (n, c, r) row of the GTA mask as one W_MAX-bit word (bit x = column x wanted)."""
    bits = np.array([1 << i for i in range(mask.shape[-1])], dtype=object)
    words = np.zeros(mask.shape[:-1], dtype=object)
    for idx in np.ndindex(*mask.shape[:-1]):
        words[idx] = int(np.sum(bits[mask[idx]])) if mask[idx].any() else 0
    return words


class _ChunkBuilder:
    """Greedy packing of consecutive units into programs that fit the core's memories."""

    def __init__(self, data: LayerData, step: Step, shape: ConvShape, p: CoreParams, t: StepTensors,
                 header: list[int]) -> None:
        self.data, self.step, self.shape, self.p, self.t, self.header = data, step, shape, p, t, header
        self.length = {Step.FORWARD: shape.out_width, Step.GTA: shape.width, Step.GTW: shape.kernel}[step]
        self.q1 = t.q["dO"] if step is Step.GTA else t.q["I"]          # Port-1 operand tensor
        self.q2 = t.q["dO"] if step is Step.GTW else t.q["W"]          # Port-2 operand tensor
        self.words1, self.words2 = _row_words(self.q1), _row_words(self.q2)
        if step is not Step.GTW:
            self.words2 = np.full(self.q2.shape[:-1], shape.kernel)     # weight rows: K words each
        self.mask_words = _mask_words(t.mask) if step is Step.GTA else None
        self.chunks: list[Chunk] = []
        self._reset()

    def _reset(self) -> None:
        self.units: list[tuple[tuple[int, int, int], list]] = []
        self.rows1: dict[tuple, int] = {}
        self.rows2: dict[tuple, int] = {}
        self.mask_set: dict[int, int] = {}
        self.operand_words = 0
        self.instr = len(self.header) + 2  # + SYNC + END

    def _keys(self, op) -> tuple[tuple, tuple, int | None]:
        wc = self.shape.weight_channel(op.c)
        if self.step is Step.FORWARD:
            return (op.n, op.c, op.in_row), (op.f, wc, op.kr), None
        if self.step is Step.GTA:
            return (op.n, op.f, op.out_row), (op.f, wc, op.kr), self.mask_words[op.n, op.c, op.in_row]
        return (op.n, op.c, op.in_row), (op.n, op.f, op.out_row), None

    def _cost(self, ops: list) -> tuple[int, int, int, list, list, list]:
        new1, new2, newm, words = {}, {}, {}, 0
        for op in ops:
            k1, k2, m = self._keys(op)
            if k1 not in self.rows1 and k1 not in new1:
                new1[k1] = 1
                words += int(self.words1[k1])
            if k2 not in self.rows2 and k2 not in new2:
                new2[k2] = 1
                words += int(self.words2[k2])
            if m is not None and m not in self.mask_set and m not in newm:
                newm[m] = 1
        return words, len(newm), len(ops) + 1, list(new1), list(new2), list(newm)

    def _fits(self, words: int, masks: int, instr: int, units: int) -> bool:
        p = self.p
        return (self.operand_words + words + units * self.length <= p.buf_depth
                and self.instr + instr <= p.imem_depth and units <= min(p.dir_depth, 1 << 16)
                and len(self.mask_set) + masks <= p.mask_depth)

    def add(self, key: tuple[int, int, int], ops: list) -> None:
        spec = self.data.spec
        check_field(spec, "n_ops of a unit", len(ops), 16)
        words, masks, instr, new1, new2, newm = self._cost(ops)
        if not self._fits(words, masks, instr, len(self.units) + 1):
            if not self.units:
                self._refuse(words, masks, instr)
            self.close()
            words, masks, instr, new1, new2, newm = self._cost(ops)
            if not self._fits(words, masks, instr, 1):
                self._refuse(words, masks, instr)
        for k in new1:
            self.rows1[k] = 0
        for k in new2:
            self.rows2[k] = 0
        for m in newm:
            self.mask_set[m] = len(self.mask_set)
        self.operand_words += words
        self.instr += instr
        self.units.append((key, ops))

    def _refuse(self, words: int, masks: int, instr: int) -> None:
        spec, p = self.data.spec, self.p
        what = f"one result row of {self.step.value} and its operands"
        check_fits(spec, f"buffer words for {what}", words + self.length, p.buf_depth, "BUF_DEPTH", 1 << 20)
        check_fits(spec, f"instruction words for {what}", instr + len(self.header) + 2, p.imem_depth,
                   "IMEM_DEPTH", 1 << 20)
        check_fits(spec, f"mask words for {what}", masks, p.mask_depth, "MASK_DEPTH", 1 << 16)

    def close(self) -> None:
        if not self.units:
            return
        p, shape, step, t = self.p, self.shape, self.step, self.t
        image: list[int] = []
        addr1, addr2 = {}, {}
        for k in self.rows1:  # operand rows in first-use order
            addr1[k] = len(image)
            image += encode_row(self.q1[k], p)
        for k in self.rows2:
            addr2[k] = len(image)
            image += encode_row(self.q2[k], p, keep_zeros=step is not Step.GTW)
        masks = list(self.mask_set)
        prog = list(self.header) + [encode(Opcode.SYNC, step=STEP_INDEX[step])]
        results: list[ResultRow] = []
        operands = len(image)
        spec = self.data.spec
        relu = int(step is Step.FORWARD and spec.kind == "conv_relu")
        prune = int(step is Step.GTA and self.data.pruned and spec.kind == "conv_relu")
        k, stride2, pad = shape.kernel, int(shape.stride == 2), shape.pad
        if step is Step.FORWARD:
            lens = dict(in_len=shape.width, out_len=shape.out_width)
        elif step is Step.GTA:
            lens = dict(in_len=shape.out_width, out_len=shape.width)
        else:
            lens = dict(in_len=shape.width, out_len=shape.out_width)
        n_ops = 0
        # An OP word is the same but for addr1, addr2 and mask_addr: encode it once, OR those in
        # (addresses < BUF_DEPTH <= 2**ADDR_W and mask indices < MASK_DEPTH <= 2**16 fit their fields).
        base = encode(Opcode.OP, mode=int(step.mode), k=k, stride2=stride2, pad=pad, **lens)
        sh1, sh2, shm = (field_position(Opcode.OP, f)[0] for f in ("addr1", "addr2", "mask_addr"))
        for u, (key, ops) in enumerate(self.units):
            out_addr = operands + u * self.length
            unit = dict(n_ops=len(ops), dir=u, out_addr=out_addr, length=self.length, shift=t.shift, relu=relu,
                        gta=int(step is Step.GTA), prune=prune, slot=PRUNE_SLOT)
            if step is Step.FORWARD and t.bias_preload is not None:
                unit.update(bias_en=1, bias=int(t.bias_preload[key[1]]))
            prog.append(encode(Opcode.UNIT, **unit))
            for op in ops:
                k1, k2, m = self._keys(op)
                prog.append(base | addr1[k1] << sh1 | addr2[k2] << sh2 | (self.mask_set[m] << shm if m is not None else 0))
            n_ops += len(ops)
            results.append(ResultRow(len(self.chunks), u, out_addr, key, self.length))
        prog.append(encode(Opcode.END))
        self.chunks.append(Chunk(prog, image, masks, results, operands + len(self.units) * self.length, n_ops))
        self._reset()


def _emit(data: LayerData, step: Step, shape: ConvShape, p: CoreParams, t: StepTensors, n: int,
          skip_weight_rows: bool = True) -> CompiledStep:
    threshold: dict[str, int] = {}
    header = _threshold_program(data, t, p, threshold, shape) if step is Step.GTA else []
    builder = _ChunkBuilder(data, step, shape, p, t, header)
    all_units = result_units(shape, step)
    live = live_rows(data, step, shape, t) if skip_weight_rows else None
    units = [(key, kept) for key, ops in all_units
             if (kept := weight_row_ops(step.value, ops, live, shape.weight_channel))]
    for key, ops in units:
        builder.add(key, ops)
    builder.close()
    length = builder.length
    single = {"buffer": int(builder.words1.sum() + (builder.words2.sum() if step is Step.GTW else
                                                     builder.words2.size * shape.kernel) + len(units) * length),
              "instructions": len(header) + 2 + len(units) + sum(len(o) for _, o in units),
              "directory": len(units)}
    return CompiledStep(data.spec.name, step, shape, p, builder.chunks, t, n, single, threshold, live,
                        sum(len(o) for _, o in all_units) - sum(len(o) for _, o in units), len(all_units) - len(units))


def result_units(shape: ConvShape, step: Step) -> list[tuple[tuple[int, int, int], list]]:
    """Consecutive ops of layer_row_ops with the same result row (section 10.1), in issue order."""
    units: list[tuple[tuple[int, int, int], list]] = []
    for op in layer_row_ops_tuple(shape, step):
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


def _threshold_program(data: LayerData, t: StepTensors, p: CoreParams, threshold: dict[str, int],
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
    """Every conv of ``model`` (golden.training.networks.conv_layers order) that has tensors in ``layers``.

    The network's first conv has no GTA (section 10.1) unless ``first_has_gta``. A layer the
    core cannot run raises ValueError naming it and the reason.
    """
    from .golden.training.networks import conv_layers
    out: dict[str, dict[Step, CompiledStep]] = {}
    for i, (name, conv, kind) in enumerate(conv_layers(model)):
        if name not in layers:
            continue
        data = layers[name]
        spec = LayerSpec.from_conv(name, conv, kind)
        if spec != data.spec:
            data = replace(data, spec=spec)
        want = [Step(s) for s in steps if not (Step(s) is Step.GTA and i == 0 and not first_has_gta)]
        out[name] = compile_layer(data, params, steps=want, samples=samples)
    return out
