"""Per-layer densities (fraction of non-zeros) that drive the analytic model, and their sources.

Sources, in the order the command tries them: a run directory's ``metrics.json`` (measured in
our own golden training run), a user table (JSON or CSV), or the densities the papers report
(gradients only; activations then use a documented assumption). Exact non-zero patterns of
golden tensors go through ``golden_patterns`` and the exact model instead.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from . import paper
from .shapes import LayerShape


@dataclass(frozen=True)
class LayerDensity:
    """act: I (SRC Port-1, OSRC Port-1); grad: dO after pruning (MSRC Port-1, OSRC Port-2);
    mask: wanted dI columns (ReLU mask, defaults to act); out_act / out_grad: written O and dI;
    weight_rows: fraction of kernel rows (f, c, kr) not pruned (Campfire weight masks): the
    compiler skips the Forward / GTA ops and the GTW units of the others."""

    act: float = 1.0
    grad: float = 1.0
    mask: float | None = None
    out_act: float = 1.0
    out_grad: float | None = None
    weight_rows: float = 1.0

    def __post_init__(self) -> None:
        for nm in ("act", "grad", "mask", "out_act", "out_grad", "weight_rows"):
            v = getattr(self, nm)
            if v is not None and not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0 and math.isfinite(v)):
                raise ValueError(f"density {nm} = {v!r} is out of range; allowed: 0.0 .. 1.0")

    @property
    def mask_density(self) -> float:
        return self.act if self.mask is None else self.mask

    @property
    def out_grad_density(self) -> float:
        return self.grad if self.out_grad is None else self.out_grad

    def as_dict(self) -> dict:
        return asdict(self)


DENSE = LayerDensity()


@dataclass
class DensityTable:
    """Densities for every layer of a network, and a line saying where they come from."""

    per_layer: dict[str, LayerDensity]
    default: LayerDensity | None
    source: str
    notes: list[str]

    # layers whose measured gradient is their pruned dI (Conv-ReLU, prune target dI): their own
    # dO is the next layer's pruned dI through this layer's ReLU (section "Densities" of the docs)
    di_target: dict[str, float] = field(default_factory=dict)
    # layers with no gradient measurement of their own (the first conv has no pruner): their
    # dO is resolved from the next layer the same way
    grad_from_next: set[str] = field(default_factory=set)

    def for_layer(self, shape: LayerShape) -> LayerDensity:
        d = self.per_layer.get(shape.name, self.default)
        if d is None:
            raise ValueError(f"densities: layer {shape.name!r} is missing from {self.source}; "
                             f"allowed: a table with every conv layer or a '*' default")
        if shape.first and shape.name not in self.per_layer:
            d = replace(d, act=1.0, mask=1.0)  # the image itself is dense
        return d

    def for_network(self, shapes: list[LayerShape]) -> list[LayerDensity]:
        """Per-layer densities in execution order, with dI-target layers resolved. A layer of the
        table that is not a conv of the network (a misspelt name) is an error, '*' default or not."""
        names = [s.name for s in shapes]
        unknown = [n for n in self.per_layer if n not in names]
        if unknown:
            raise ValueError(f"densities: layer {unknown[0]!r} of {self.source} is not a conv layer of this network; "
                             f"allowed: {', '.join(names)} or '*'")
        out = [self.for_layer(s) for s in shapes]
        for i, s in enumerate(shapes):
            if s.name not in self.di_target and s.name not in self.grad_from_next:
                continue
            if s.name in self.di_target:
                out[i] = replace(out[i], out_grad=self.di_target[s.name])
            nxt = shapes[i + 1] if i + 1 < len(shapes) else None
            if nxt is not None and nxt.name in self.di_target:
                relu = out[i + 1].act  # this layer's ReLU mask is (about) the next layer's input
                out[i] = replace(out[i], grad=min(1.0, self.di_target[nxt.name] * relu), out_act=relu)
            else:  # fed by layers without pruning (the classifier): the ReLU mask bounds it
                out[i] = replace(out[i], grad=out[i + 1].act if nxt is not None else out[i].act)
        return out


def paper_table(model: str, input_kind: str) -> DensityTable:
    """The papers' reported gradient density for the network, activations assumed (see paper.py)."""
    grad, note = paper.reported_grad_density(model, input_kind)
    act = paper.ASSUMED_ACT_DENSITY
    notes = [note, f"activation density not reported in the papers: assumed {act} for every conv input "
                   f"after a ReLU and 1.0 for the image"]
    return DensityTable({}, LayerDensity(act=act, grad=grad, out_act=1.0, out_grad=grad), "paper", notes)


_ACT_KEYS = ("act", "i", "density_i", "act_density", "activation", "activations", "input", "input_density")
_GRAD_KEYS = ("grad", "do_pruned", "density_do_pruned", "grad_density", "pruned", "do", "density_do",
              "gradient", "gradients")
_MASK_KEYS = ("mask", "relu_mask", "density_mask")


def _pick(entry: dict, keys: tuple[str, ...]) -> float | None:
    low = {str(k).lower(): v for k, v in entry.items()}
    for k in keys:
        if k in low:
            v = low[k]
            if isinstance(v, list):  # a history: the last value is the trained state
                v = v[-1] if v else None
            if isinstance(v, dict) and "density" in v:
                v = v["density"]
            if v is not None:
                return float(v)
    return None


_NAME_KEYS = ("name", "layer")


def _entry_density(entry: dict, where: str) -> LayerDensity:
    flat = {k: v for k, v in entry.items() if not (k in ("density", "densities") and isinstance(v, dict))}
    for nested in ("density", "densities"):
        if isinstance(entry.get(nested), dict):
            flat.update(entry[nested])
    known = _ACT_KEYS + _GRAD_KEYS + _MASK_KEYS + _NAME_KEYS
    unknown = [k for k in flat if str(k).lower() not in known]
    if unknown:  # a misspelt key must not silently leave a density at 1.0
        raise ValueError(f"densities: {where}: key {unknown[0]!r} is unknown; allowed: {', '.join(_ACT_KEYS)} "
                         f"(activations), {', '.join(_GRAD_KEYS)} (gradients), {', '.join(_MASK_KEYS)}")
    try:
        act, grad, mask = _pick(flat, _ACT_KEYS), _pick(flat, _GRAD_KEYS), _pick(flat, _MASK_KEYS)
    except (TypeError, ValueError):
        raise ValueError(f"densities: {where}: a density is not a number; allowed: 0.0 .. 1.0") from None
    if act is None and grad is None:
        raise ValueError(f"densities: {where} has none of the keys {_ACT_KEYS[:3]} or {_GRAD_KEYS[:3]}")
    try:
        return LayerDensity(act=1.0 if act is None else act, grad=1.0 if grad is None else grad, mask=mask,
                            out_grad=None)
    except ValueError as exc:
        raise ValueError(f"densities: {where}: {exc}") from None


def _layers_of(obj) -> dict[str, dict]:
    """{layer: entry} from either {'layers': {...}} / {'layers': [{'name': ...}]} / a flat mapping."""
    if isinstance(obj, dict) and "layers" in obj:
        obj = obj["layers"]
    elif isinstance(obj, dict) and "densities" in obj and isinstance(obj["densities"], (dict, list)):
        obj = obj["densities"]
    if isinstance(obj, list):
        out = {}
        for i, e in enumerate(obj):
            if not isinstance(e, dict) or "name" not in e and "layer" not in e:
                raise ValueError(f"densities: list entry {i} has no 'name'/'layer' key")
            out[str(e.get("name", e.get("layer")))] = e
        return out
    if isinstance(obj, dict):
        return {str(k): v for k, v in obj.items() if isinstance(v, dict)}
    raise ValueError("densities: expected a mapping of layer -> densities or a list of layers")


def table_from_mapping(obj, source: str) -> DensityTable:
    layers = _layers_of(obj)
    if not layers:
        raise ValueError(f"densities: {source} holds no per-layer densities")
    per = {name: _entry_density(e, f"{source}: layer {name!r}") for name, e in layers.items()}
    default = per.pop("*", None)
    return DensityTable(per, default, source, [f"densities from {source}"])


def load_table(path: str | Path) -> DensityTable:
    """A user table: JSON (see table_from_mapping) or CSV with columns layer, act, grad[, mask]."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"densities = {str(path)!r} is out of range; allowed: an existing JSON/CSV file or run dir")
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        mapping = {}
        for i, r in enumerate(rows):
            name = r.get("layer") or r.get("name")
            if not name:
                raise ValueError(f"densities: {path} row {i + 2} has no 'layer' column")
            mapping[name] = {}
            for k, v in r.items():
                if k in ("layer", "name") or v in ("", None):
                    continue
                if k is None or isinstance(v, list):
                    raise ValueError(f"densities: {path} row {i + 2} has more cells than the header's columns")
                try:
                    mapping[name][k] = float(v)
                except ValueError:
                    raise ValueError(f"densities: {path} row {i + 2}, column {k!r}: {v!r} is not a number; "
                                     f"allowed: 0.0 .. 1.0") from None
        return table_from_mapping(mapping, str(path))
    try:
        obj = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"densities: {path}: not JSON ({(str(exc).splitlines() or [''])[0]}); allowed: a JSON "
                         f"table of layer -> densities, a CSV file, or a run dir") from None
    return table_from_mapping(obj, str(path))


def table_from_metrics(metrics: dict, source: str) -> DensityTable:
    """metrics.json of golden.training.train: the last epoch's per-layer activation_density and
    grad_density (after pruning), with each layer's prune ``target`` (dO or dI)."""
    epochs = metrics.get("epochs") or []
    if not epochs or not isinstance(epochs[-1].get("layers"), dict):
        return table_from_mapping(metrics, source)
    per, di, missing = {}, {}, set()
    for name, e in epochs[-1]["layers"].items():
        act = e.get("activation_density")
        grad = e.get("grad_density")
        target = e.get("target", "dO")
        if target == "dI" and grad is not None:
            di[name] = float(grad)
            grad = None
        elif grad is None:
            missing.add(name)
        per[name] = LayerDensity(act=1.0 if act is None else float(act), grad=1.0 if grad is None else float(grad))
    if not per:
        raise ValueError(f"densities: {source} has no per-layer densities in its last epoch")
    return DensityTable(per, None, "run", [f"densities measured in the training run ({source}, last epoch)"], di, missing)


def load_run_dir(run_dir: str | Path) -> DensityTable:
    """Measured per-layer densities from a golden training run's metrics.json."""
    run_dir = Path(run_dir)
    if run_dir.is_file():
        return load_table(run_dir)
    f = run_dir / "metrics.json"
    if not f.is_file():
        raise ValueError(f"densities = {str(run_dir)!r} is out of range; allowed: a run dir with metrics.json")
    return with_weight_masks(table_from_metrics(json.loads(f.read_text()), str(f)), run_dir)


def weight_row_densities(run_dir: str | Path) -> dict[str, float]:
    """Per conv layer of a Campfire run: the fraction of kernel rows its weight masks keep ({} without masks)."""
    from ..golden.training.campfire import find_masks, load_masks, zero_kernel_rows
    if find_masks(run_dir) is None:
        return {}
    masks = load_masks(find_masks(run_dir))
    return {key[:-len("/weight")]: 1.0 - float(zero_kernel_rows(m).mean())
            for key, m in masks.items() if key.endswith("/weight") and m.ndim == 4}


def with_weight_masks(table: DensityTable, run_dir: str | Path) -> DensityTable:
    """``table`` with each conv layer's weight_rows taken from the run's weight masks, if it has any."""
    rows = weight_row_densities(run_dir)
    if not rows:
        return table
    for name, w in rows.items():
        table.per_layer[name] = replace(table.per_layer.get(name, table.default or DENSE), weight_rows=w)
    mean = sum(rows.values()) / len(rows)
    table.notes.append(f"weight sparsity from the run's Campfire masks: {mean:.3f} of the kernel rows kept "
                       f"(mean over {len(rows)} conv layers); the dense baseline runs every row")
    return table


def golden_patterns(run_dir: str | Path) -> list[tuple[LayerShape, dict[str, np.ndarray]]]:
    """Exact non-zero patterns of exported golden tensors (section 9), with each layer's shape.

    The gradient a layer's backward consumes is dO_pruned where the layer prunes dO
    (Conv-BN-ReLU) and dO otherwise; the written results are O's ReLU mask and dI_pruned.
    """
    from ..golden.training.tensors import load_golden  # verifies format, checksums and shapes
    from ..golden.training.campfire import find_masks, load_masks
    run = load_golden(run_dir)
    masks = load_masks(find_masks(run_dir)) if find_masks(run_dir) is not None else None
    out = []
    for i, name in enumerate(run.layers):
        meta, arrs = run.layer(name), run.arrays[name]
        grad_name = "dO_pruned" if meta.get("prune_target") == "dO" and "dO_pruned" in arrs else "dO"
        i_arr, g_arr, w = arrs["I"], arrs[grad_name], arrs["W"]
        shape = LayerShape(name, i_arr.shape[1], g_arr.shape[1], i_arr.shape[2], i_arr.shape[3],
                           g_arr.shape[2], g_arr.shape[3], int(w.shape[2]), int(meta.get("stride", 1)),
                           int(meta.get("padding", 0)), int(meta.get("groups", 1)), first=i == 0 and i_arr.shape[1] <= 3)
        pats = {"in": i_arr != 0, "grad": g_arr != 0, "live_rows": np.asarray(w != 0).any(axis=3)}
        if masks is not None and f"{name}/weight" in masks:  # GTW skips only rows the mask pruned
            pats["gtw_rows"] = masks[f"{name}/weight"].any(axis=3)
        if "relu_mask" in arrs:
            pats["out"] = arrs["relu_mask"] != 0
        if "dI_pruned" in arrs:
            pats["out_grad"] = arrs["dI_pruned"] != 0
        out.append((shape, pats))
    return out


def densities_of_patterns(pats: dict[str, np.ndarray]) -> LayerDensity:
    """Measured densities of exact patterns (for the analytic model and the report)."""
    return LayerDensity(act=float(pats["in"].mean()), grad=float(pats["grad"].mean()),
                        out_act=float(pats["out"].mean()) if "out" in pats else 1.0,
                        out_grad=float(pats["out_grad"].mean()) if "out_grad" in pats else None,
                        weight_rows=float(pats["gtw_rows"].mean()) if "gtw_rows" in pats else 1.0)
