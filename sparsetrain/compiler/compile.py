"""The compiler: a conv layer and its tensors -> a core program, buffer image and masks.

``compile_step`` turns one layer (``LayerData``: its ``ConvShape``, block kind and float tensors)
into the instructions of section 11.3 for one step (forward / gta / gtw): it refuses any layer
the core cannot run (``geometry``), chooses the scales (section 2, ``quantise``), packs the units
of section 10.1, in the order of ``golden.bitexact.rowconv.layer_row_ops`` (the one decomposition), into
programs that fit the core's memories (``layout``) and writes their words (``emit``).
``compile_layer`` / ``compile_network`` do every step of a layer / every conv of a model.
``CompiledStep.decode`` turns the result rows back into a tensor.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..arch.geometry import ConvShape
from ..arch.isa import CoreParams
from ..arch.steps import STEP_NAMES, Step
from ..golden.bitexact.rowconv import layer_row_ops_tuple
from ..golden.training.campfire import find_masks, load_masks, weight_row_ops
from .bias import BiasGradient, compile_bias_gradient
from .emit import Chunk, ResultRow, continuation_header, emit_chunk, end_batch_word, threshold_program
from .geometry import (check_accumulator, check_geometry, check_kind, check_reproducible, check_samples)
from .layout import ChunkPacker, StepOperands, Unit, block_headers
from .quantise import StepTensors, forward_tensors, gta_tensors, gtw_tensors



@dataclass
class LayerData:
    """Float tensors of one layer at one training step (golden names, section 9) and its pruning state.

    ``shape`` is the layer's geometry at the batch of ``arrays`` (its name names the layer in
    every refusal); ``kind`` the block around the conv (``geometry.KINDS``); ``bias`` whether the
    conv adds one (None: whether ``arrays`` holds b).
    """

    shape: ConvShape
    kind: str
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
    bias: bool | None = None
    tau_batch: float | None = None   # the training's threshold of this batch (recorded, reported by check)

    def __post_init__(self) -> None:
        check_kind(self.shape.name, self.kind)
        if self.bias is None:
            self.bias = "b" in self.arrays

    @property
    def name(self) -> str:
        return self.shape.name

    @classmethod
    def from_conv(cls, name: str, conv: Any, kind: str, arrays: Mapping[str, np.ndarray], **state: Any) -> "LayerData":
        """From an nn.Conv2d (duck-typed) and its tensors: the geometry at the batch of I."""
        if "I" not in arrays:
            raise ValueError(f"layer {name}: tensor I is missing; allowed: arrays with I (N, C, H, W)")
        shape = ConvShape.from_conv(conv, np.shape(arrays["I"]), name=name)
        return cls(shape, kind, arrays, bias=conv.bias is not None, **state)

    @classmethod
    def from_golden(cls, run: Any, name: str) -> "LayerData":
        """From ``golden.training.tensors.load_golden(...)``: a layer's manifest entry and arrays (and the
        run's weight masks, when the golden directory lies in a Campfire run directory)."""
        meta = run.layer(name)
        info = run.manifest.get("run", {})
        masks_dir = find_masks(run.path) if getattr(run, "path", None) is not None else None
        mask = load_masks(masks_dir).get(f"{name}/weight") if masks_dir is not None else None
        return cls(ConvShape.from_manifest(name, meta), meta["kind"], run.arrays[name], list(meta.get("fifo") or []),
                   bool(meta.get("fifo_full")), bool(meta.get("pruned")), float(info.get("p", 0.9)),
                   str(info.get("estimator", "unbiased")), int(meta.get("seed") or 1),
                   None if mask is None else ~mask.any(axis=3),
                   None if info.get("N_F") is None else int(info["N_F"]), bool(info.get("two_pass", False)),
                   "b" in meta["arrays"], meta.get("tau_batch"))

    def grad_output(self) -> np.ndarray:
        """The dO the conv's backward consumes: pruned where the block prunes dO (Conv-BN-ReLU)."""
        name = "dO_pruned" if self.kind == "conv_bn_relu" and "dO_pruned" in self.arrays else "dO"
        return self.require(name)

    def require(self, name: str) -> np.ndarray:
        if name not in self.arrays:
            raise ValueError(f"layer {self.name}: tensor {name} is missing; allowed: a golden run that "
                             f"stored {name} (has {', '.join(self.arrays)})")
        return np.asarray(self.arrays[name])


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
    # GTA of a layer with a bias: the bias-gradient programs (section 11.6), run after the step's own
    bias: BiasGradient | None = None
    bias_refused: str = ""              # why a layer with a bias has no db programs (memories too small)

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


# ----------------------------------------------------------------------------- compilation

def compile_step(data: LayerData, step: Step | str, params: CoreParams, *, samples: int | None = None,
                 skip_weight_rows: bool = True) -> CompiledStep:
    """Programs, buffer images and masks for one step of one layer (first ``samples`` of the batch).

    ``skip_weight_rows``: leave out the row ops of all-zero kernel rows (Forward, GTA) and the GTW
    units of kernel rows the weight masks pruned (``data.pruned_rows``); results stay bit-exact
    (GTW: a pruned row's gradient is 0, as the training's gradient mask makes it)."""
    step = Step(step) if not isinstance(step, Step) else step
    name = data.name
    x = data.require("I")
    if x.ndim != 4:
        raise ValueError(f"layer {name}: I shape = {x.shape} is out of range; allowed: (N, C, H, W)")
    if tuple(x.shape) != data.shape.input_shape:
        raise ValueError(f"layer {name}: I shape = {tuple(x.shape)} does not match the layer; allowed: "
                         f"{data.shape.input_shape}")
    n_all = x.shape[0]
    n = n_all if samples is None else check_samples(data.shape, samples, n_all)
    check_geometry(data.shape, k_max=params.k_max, w_max=params.w_max)
    shape = data.shape.with_batch(n)
    x = x[:n]
    w = data.require("W")
    if tuple(w.shape) != shape.weight_shape:
        raise ValueError(f"layer {name}: W shape = {tuple(w.shape)} does not match the layer; allowed: "
                         f"{shape.weight_shape}")
    dw, acc_w = params.dw, params.acc_w
    if step is Step.FORWARD:
        b = data.require("b") if data.bias else None
        t = forward_tensors(shape, x, w, b, relu=data.kind == "conv_relu", dw=dw, acc_w=acc_w)
        preload = int(np.max(np.abs(t.bias_preload))) if t.bias_preload is not None and t.bias_preload.size else 0
        check_accumulator(shape, [step], dw=dw, acc_w=acc_w, bias_preload=preload)
    else:
        g = data.grad_output()[:n]
        if tuple(g.shape) != shape.output_shape:
            raise ValueError(f"layer {name}: dO shape = {tuple(g.shape)} does not match the layer; allowed: "
                             f"{shape.output_shape}")
        check_accumulator(shape, [step], dw=dw, acc_w=acc_w)
        if step is Step.GTA:
            check_reproducible(data, params)
            t = gta_tensors(shape, g, w, gta_mask(data, x), dw=dw, acc_w=acc_w)
            if data.bias:
                c = _emit(data, step, shape, params, t, n, skip_weight_rows)
                try:
                    c.bias = compile_bias_gradient(shape, t.q["dO"], g, t.frac["dO"], params)
                except ValueError as err:   # the step itself runs; check reports why db does not
                    c.bias_refused = str(err)
                return c
        else:
            t = gtw_tensors(shape, x, g, dw=dw, acc_w=acc_w)
            if skip_weight_rows and data.pruned_rows is not None:
                t = replace(t, reference=np.where(_pruned(data, shape)[..., None], 0.0, t.reference))
    return _emit(data, step, shape, params, t, n, skip_weight_rows)


def _pruned(data: LayerData, shape: ConvShape) -> np.ndarray:
    rows = np.asarray(data.pruned_rows, dtype=bool)
    want = shape.weight_shape[:3]
    if rows.shape != want:
        raise ValueError(f"layer {data.name}: pruned_rows shape = {rows.shape} does not match the layer; "
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


def _emit(data: LayerData, step: Step, shape: ConvShape, p: CoreParams, t: StepTensors, n: int,
          skip_weight_rows: bool = True) -> CompiledStep:
    threshold: dict[str, int] = {}
    header: list[int] = []
    if step is Step.GTA:
        # n: the gradients the PPU accumulates |g| of, the wanted (mask) columns (section 7.2)
        header, threshold = threshold_program(data.tau_fifo, data.seed, data.p, data.estimator, t, p,
                                              max(1, int(np.count_nonzero(t.mask))))
    prune = step is Step.GTA and data.pruned and data.kind == "conv_relu"
    # a pruned layer's GTA ends its batch: END_BATCH on every group (section 11.3) at the end of the
    # step's last program; the programs run one after the other without a reset (continuation_header)
    tail = [end_batch_word(threshold, p)] if prune else []
    operands = StepOperands.of(step, shape, t)
    packer = ChunkPacker(operands, p, len(header) + len(tail))
    all_units = result_units(shape, step)
    live = live_rows(data, step, shape, t) if skip_weight_rows else None
    units = [(key, kept) for key, ops in all_units
             if (kept := weight_row_ops(step.value, ops, live, shape.weight_channel))]
    for key, ops in units:
        packer.add(key, ops)
    relu = step is Step.FORWARD and data.kind == "conv_relu"
    plans = packer.finish()
    if threshold:
        threshold["end_batch"] = int(bool(tail))
    later = continuation_header(header, threshold)
    chunks = [emit_chunk(i, plan, operands, p, t, header if i == 0 else later, relu=relu, prune=prune,
                         tail=tail if i == len(plans) - 1 else ())
              for i, plan in enumerate(plans)]
    single = {"buffer": operands.single_program_words(units),
              "instructions": len(header) + len(tail) + 2 + block_headers(len(units)) + len(units)
              + sum(len(o) for _, o in units),
              "directory": len(units)}
    return CompiledStep(data.name, step, shape, p, chunks, t, n, single, threshold, live,
                        sum(len(o) for _, o in all_units) - sum(len(o) for _, o in units), len(all_units) - len(units))


def result_units(shape: ConvShape, step: Step) -> list[Unit]:
    """Consecutive ops of layer_row_ops with the same result row (section 10.1), in issue order."""
    units: list[Unit] = []
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
    from ..golden.training.networks import conv_layers
    out: dict[str, dict[Step, CompiledStep]] = {}
    for i, (name, conv, kind) in enumerate(conv_layers(model)):
        if name not in layers:
            continue
        data = layers[name]
        shape = ConvShape.from_conv(conv, data.shape.input_shape, name=name)
        if (shape, kind, conv.bias is not None) != (data.shape, data.kind, data.bias):
            data = replace(data, shape=shape, kind=kind, bias=conv.bias is not None)
        want = [Step(s) for s in steps if not (Step(s) is Step.GTA and i == 0 and not first_has_gta)]
        out[name] = compile_layer(data, params, steps=want, samples=samples)
    return out
