"""Golden training tensors: capture during a training step, write and verify them.

File format: docs/architecture.md section 9 (the single source of truth). One golden
directory holds ``golden.npz`` (arrays named ``<layer>/<tensor>``, float32) and
``manifest.json`` (run info, per-layer geometry, pruning state, and per array its shape,
dtype, sha256 and frac bits).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import zipfile
import zlib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...arch.fixedpoint import check_param, choose_frac_bits
from .networks import conv_layers, prune_target
from .pruning import GradientPruner, pruners

FORMAT, VERSION = "sparsetrain-golden", 2  # 2: the metadata is under a checksum (meta_sha256)
META_SUM = "meta_sha256"
NPZ_NAME, MANIFEST_NAME = "golden.npz", "manifest.json"
TENSOR_NAMES = ("I", "W", "b", "O", "relu_mask", "dO", "dO_pruned", "dI", "dI_pruned", "dW", "db")


@dataclass
class LayerTensors:
    """The golden tensors of one conv layer at one training step, with its pruning state."""

    name: str
    kind: str  # conv_relu | conv_bn_relu
    stride: int
    padding: int
    groups: int
    kernel: int
    pruned: bool  # a pruning layer serves this conv
    tau: float | None  # threshold applied this step (None: pruning off, FIFO not yet full)
    tau_batch: float | None  # this batch's own DBTD threshold, pushed at the end of the step
    fifo: list[float]  # FIFO contents used this step, oldest first (before the push)
    fifo_full: bool
    seed: int | None  # seed of the layer's pruning generator
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def prune_target(self) -> str:
        return prune_target(self.kind)


def sha256_of(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes(order="C")).hexdigest()


def meta_sha256(manifest: dict[str, Any]) -> str:
    """Checksum of the manifest's metadata: every field but ``meta_sha256`` itself, canonical JSON."""
    body = {k: v for k, v in manifest.items() if k != META_SUM}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def tool_versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    try:
        out["sparsetrain"] = metadata.version("sparsetrain")
    except metadata.PackageNotFoundError:
        out["sparsetrain"] = "unknown"
    return out


def export_golden(out_dir: str | Path, layers: list[LayerTensors], run: dict[str, Any], *, dw: int = 16,
                  overwrite: bool = False) -> Path:
    """Write golden.npz + manifest.json into ``out_dir``; refuse to replace files unless ``overwrite``."""
    check_param("DW", dw)
    out = Path(out_dir)
    npz_path, man_path = out / NPZ_NAME, out / MANIFEST_NAME
    if not overwrite:
        for p in (npz_path, man_path):
            if p.exists():
                raise FileExistsError(f"{p} exists; pass overwrite=True (--force) to replace it")
    if not layers:
        raise ValueError("layers = [] is out of range; allowed: at least one LayerTensors")
    out.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    manifest_layers: dict[str, Any] = {}
    for lt in layers:
        unknown = set(lt.arrays) - set(TENSOR_NAMES)
        if unknown:
            raise ValueError(f"layer {lt.name}: tensor names {sorted(unknown)} are out of range; "
                             f"allowed: {', '.join(TENSOR_NAMES)}")
        entries = {}
        for tname, a in lt.arrays.items():
            a = np.ascontiguousarray(a, dtype=np.float32)
            arrays[f"{lt.name}/{tname}"] = a
            entries[tname] = {"shape": list(a.shape), "dtype": str(a.dtype), "sha256": sha256_of(a),
                              "frac_bits": choose_frac_bits(a, dw)}
        manifest_layers[lt.name] = {
            "kind": lt.kind, "stride": lt.stride, "padding": lt.padding, "groups": lt.groups,
            "kernel": lt.kernel, "prune_target": lt.prune_target, "pruned": lt.pruned, "tau": lt.tau,
            "tau_batch": lt.tau_batch, "fifo": list(lt.fifo), "fifo_full": lt.fifo_full, "seed": lt.seed,
            "arrays": entries,
        }
    manifest = {
        "format": FORMAT, "version": VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "tool_versions": tool_versions(), "dw": dw, "run": run, "layers": manifest_layers,
    }
    # JSON round trip first, so the checksum covers exactly what a reader gets back
    manifest = json.loads(json.dumps(manifest))
    manifest[META_SUM] = meta_sha256(manifest)
    # Write to temporary names first so a crash never leaves a half-written pair behind.
    tmp_npz, tmp_man = out / (NPZ_NAME + ".tmp.npz"), out / (MANIFEST_NAME + ".tmp")
    np.savez(tmp_npz, **arrays)
    tmp_man.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp_npz, npz_path)
    os.replace(tmp_man, man_path)
    return out


@dataclass
class GoldenRun:
    """A verified golden directory: ``manifest`` as written, ``arrays[layer][tensor]``."""

    path: Path
    manifest: dict[str, Any]
    arrays: dict[str, dict[str, np.ndarray]]

    @property
    def layers(self) -> list[str]:
        return list(self.manifest["layers"])

    def layer(self, name: str) -> dict[str, Any]:
        """Manifest entry of ``name`` (geometry, tau, fifo, ...)."""
        if name not in self.manifest["layers"]:
            raise ValueError(f"layer = {name!r} is not in {self.path}; allowed: {', '.join(self.layers)}")
        return self.manifest["layers"][name]

    def frac_bits(self, layer: str, tensor: str) -> int:
        return int(self.layer(layer)["arrays"][tensor]["frac_bits"])

    def __getitem__(self, key: tuple[str, str]) -> np.ndarray:
        layer, tensor = key
        self.layer(layer)
        if tensor not in self.arrays[layer]:
            raise ValueError(f"tensor = {tensor!r} is not stored for layer {layer}; "
                             f"allowed: {', '.join(self.arrays[layer])}")
        return self.arrays[layer][tensor]


def resolve_golden_dir(run_dir: str | Path) -> Path:
    """The golden directory meant by ``run_dir`` (itself, or the only golden/step_* under it)."""
    path = Path(run_dir)
    if not path.is_dir():
        raise ValueError(f"run_dir = {str(path)!r} is not a folder; allowed: a golden directory or a training run "
                         f"dir with one golden/step_* inside")
    if (path / MANIFEST_NAME).is_file() or (path / NPZ_NAME).is_file():
        return path
    if not (path / "golden").is_dir():
        raise ValueError(f"run_dir = {str(path)!r} holds no {MANIFEST_NAME} and no golden/ folder; allowed: a golden "
                         f"directory, or a run trained with --dump-tensors")
    steps = sorted(p for p in (path / "golden").iterdir() if (p / MANIFEST_NAME).is_file())
    if len(steps) != 1:
        raise ValueError(f"run_dir = {str(path)!r} holds {len(steps)} golden step directories "
                         f"({', '.join(p.name for p in steps) or 'none'}); allowed: exactly one, or pass one of them")
    return steps[0]


def load_golden(run_dir: str | Path) -> GoldenRun:
    """Read and verify a golden directory; ValueError names the layer and array that is wrong.

    ``run_dir`` is a golden directory, or a training run directory holding exactly one
    ``golden/step_*`` directory.
    """
    path = resolve_golden_dir(run_dir)
    man_path, npz_path = path / MANIFEST_NAME, path / NPZ_NAME
    for p in (man_path, npz_path):
        if not p.is_file():
            raise ValueError(f"{p} is missing; a golden directory holds {MANIFEST_NAME} and {NPZ_NAME}")
    manifest = _read_manifest(man_path)
    arrays: dict[str, dict[str, np.ndarray]] = {}
    try:
        npz = np.load(npz_path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{npz_path}: not a readable .npz archive ({_short(exc)}); allowed: the {NPZ_NAME} "
                         f"that `sparsetrain train --dump-tensors` wrote") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"{npz_path}: a single .npy array, not an .npz archive; allowed: the {NPZ_NAME} "
                         f"that `sparsetrain train --dump-tensors` wrote")
    with npz:
        stored = set(npz.files)
        expected = set()
        for lname, entry in manifest["layers"].items():
            arrays[lname] = {}
            for tname, meta in entry["arrays"].items():
                key = f"{lname}/{tname}"
                expected.add(key)
                if key not in stored:
                    raise ValueError(f"{npz_path}: layer {lname}, array {tname} is missing")
                try:
                    a = npz[key]
                except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
                    raise ValueError(f"{npz_path}: layer {lname}, array {tname} cannot be read ({_short(exc)}); "
                                     f"the file is damaged") from None
                if list(a.shape) != list(meta["shape"]):
                    raise ValueError(f"{npz_path}: layer {lname}, array {tname}: shape {list(a.shape)} does not "
                                     f"match the manifest's {meta['shape']}")
                if str(a.dtype) != meta["dtype"]:
                    raise ValueError(f"{npz_path}: layer {lname}, array {tname}: dtype {a.dtype} does not match "
                                     f"the manifest's {meta['dtype']}")
                if sha256_of(a) != meta["sha256"]:
                    raise ValueError(f"{npz_path}: layer {lname}, array {tname}: sha256 checksum does not match "
                                     f"the manifest")
                arrays[lname][tname] = a
        extra = stored - expected
        if extra:
            raise ValueError(f"{npz_path}: arrays {sorted(extra)} are not in the manifest")
    for lname, entry in manifest["layers"].items():
        _check_layer_against_arrays(man_path, lname, entry, arrays[lname],
                                    pruning_on=bool(manifest["run"].get("prune", True)))
    return GoldenRun(path, manifest, arrays)


def _short(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:120] or type(exc).__name__


_INT, _NUM = (int,), (int, float)
# field -> (accepted types, may be null) of a manifest layer entry and of an array entry
_LAYER_FIELDS = {"kind": ((str,), False), "stride": (_INT, False), "padding": (_INT, False), "groups": (_INT, False),
                 "kernel": (_INT, False), "prune_target": ((str,), False), "pruned": ((bool,), False),
                 "tau": (_NUM, True), "tau_batch": (_NUM, True), "fifo": ((list,), False),
                 "fifo_full": ((bool,), False), "seed": (_INT, True), "arrays": ((dict,), False)}
_ARRAY_FIELDS = {"shape": ((list,), False), "dtype": ((str,), False), "sha256": ((str,), False),
                 "frac_bits": (_INT, False)}


def _field(where: str, entry: Any, name: str, types: tuple[type, ...], nullable: bool) -> Any:
    if not isinstance(entry, dict):
        raise ValueError(f"{where} is a {type(entry).__name__}; allowed: a JSON object")
    if name not in entry:
        raise ValueError(f"{where}: field '{name}' is missing")
    v = entry[name]
    if v is None and nullable:
        return v
    if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
        allowed = " or ".join(t.__name__ for t in types) + (" or null" if nullable else "")
        raise ValueError(f"{where}: field '{name}' = {v!r} has the wrong type; allowed: {allowed}")
    return v


def _read_manifest(man_path: Path) -> dict[str, Any]:
    """manifest.json, parsed and checked field by field; every error names the file and the field."""
    try:
        manifest = json.loads(man_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{man_path}: not JSON ({_short(exc)}); allowed: the {MANIFEST_NAME} that "
                         f"`sparsetrain train --dump-tensors` wrote") from None
    where = str(man_path)
    if not isinstance(manifest, dict):
        raise ValueError(f"{where}: a JSON {type(manifest).__name__}; allowed: a JSON object (format, version, "
                         f"run, layers, ...)")
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{where}: format = {manifest.get('format')!r}; allowed: {FORMAT!r}")
    if manifest.get("version") != VERSION:
        raise ValueError(f"{where}: version = {manifest.get('version')!r}; allowed: {VERSION} (export the "
                         f"tensors again with this sparsetrain)")
    stored = _field(where, manifest, META_SUM, (str,), False)
    if stored != meta_sha256(manifest):
        raise ValueError(f"{where}: field '{META_SUM}' does not match the metadata; the manifest was changed "
                         f"after export (allowed: the manifest as written)")
    _field(where, manifest, "dw", _INT, False)
    _field(where, manifest, "run", (dict,), False)
    layers = _field(where, manifest, "layers", (dict,), False)
    if not layers:
        raise ValueError(f"{where}: field 'layers' is empty; allowed: at least one layer")
    for lname, entry in layers.items():
        lwhere = f"{where}: layer {lname}"
        for name, (types, nullable) in _LAYER_FIELDS.items():
            _field(lwhere, entry, name, types, nullable)
        if entry["kind"] not in KINDS:
            raise ValueError(f"{lwhere}: field 'kind' = {entry['kind']!r}; allowed: {', '.join(KINDS)}")
        if entry["prune_target"] != prune_target(entry["kind"]):
            raise ValueError(f"{lwhere}: field 'prune_target' = {entry['prune_target']!r} does not match kind "
                             f"{entry['kind']}; allowed: {prune_target(entry['kind'])!r}")
        for aname, meta in entry["arrays"].items():
            if aname not in TENSOR_NAMES:
                raise ValueError(f"{lwhere}: array {aname!r} is unknown; allowed: {', '.join(TENSOR_NAMES)}")
            for name, (types, nullable) in _ARRAY_FIELDS.items():
                _field(f"{lwhere}, array {aname}", meta, name, types, nullable)
            if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in meta["shape"]):
                raise ValueError(f"{lwhere}, array {aname}: field 'shape' = {meta['shape']!r}; allowed: a list "
                                 f"of non-negative integers")
    return manifest


KINDS = ("conv_relu", "conv_bn_relu")


def _check_layer_against_arrays(man_path: Path, lname: str, entry: dict[str, Any], a: dict[str, np.ndarray], *,
                                pruning_on: bool = True) -> None:
    """The manifest's geometry and kind against the arrays themselves (W, I, O, relu_mask)."""
    where = f"{man_path}: layer {lname}"
    k, s, p, g = entry["kernel"], entry["stride"], entry["padding"], entry["groups"]
    if s < 1 or p < 0 or g < 1 or k < 1:
        raise ValueError(f"{where}: fields 'kernel' = {k}, 'stride' = {s}, 'padding' = {p}, 'groups' = {g} are out of "
                         f"range; allowed: kernel, stride, groups >= 1, padding >= 0")
    for name in ("I", "W", "O"):
        if name in a and a[name].ndim != 4:
            raise ValueError(f"{where}: array {name} has shape {list(a[name].shape)}; allowed: 4 dimensions")
    w, x, o = a.get("W"), a.get("I"), a.get("O")
    if w is not None and (w.shape[2] != k or w.shape[3] != k):
        raise ValueError(f"{where}: field 'kernel' = {k} does not match W's shape {list(w.shape)}; allowed: "
                         f"{w.shape[2]}")
    if w is not None and x is not None and x.shape[1] != w.shape[1] * g:
        raise ValueError(f"{where}: field 'groups' = {g} does not match I {list(x.shape)} and W {list(w.shape)}")
    if w is not None and x is not None and o is not None:
        out_hw = [(x.shape[i] + 2 * p - k) // s + 1 for i in (2, 3)]
        if list(o.shape) != [x.shape[0], w.shape[0], *out_hw]:
            raise ValueError(f"{where}: fields 'stride' = {s}, 'padding' = {p} do not match the arrays: I "
                             f"{list(x.shape)} and W {list(w.shape)} give O {[x.shape[0], w.shape[0], *out_hw]}, "
                             f"stored {list(o.shape)}")
    # kind: conv_relu layers store the ReLU's mask (1 where O > 0); conv_bn_relu layers store none
    has_mask = "relu_mask" in a
    backward = "dO" in a
    if entry["kind"] == "conv_relu" and backward and not has_mask:
        raise ValueError(f"{where}: field 'kind' = 'conv_relu' does not match the arrays (no relu_mask); "
                         f"allowed: 'conv_bn_relu'")
    if entry["kind"] == "conv_bn_relu" and has_mask:
        raise ValueError(f"{where}: field 'kind' = 'conv_bn_relu' does not match the arrays (a relu_mask is "
                         f"stored); allowed: 'conv_relu'")
    if has_mask and o is not None and not np.array_equal(a["relu_mask"], (o > 0).astype(np.float32)):
        raise ValueError(f"{where}: array relu_mask is not O > 0 (the ReLU of this conv_relu layer)")
    # which gradient the layer prunes: conv_relu prunes dI (dO = dO_pruned), conv_bn_relu dO (dI = dI_pruned)
    same = {"conv_relu": ("dO", "dO_pruned"), "conv_bn_relu": ("dI", "dI_pruned")}[entry["kind"]]
    if all(n in a for n in same) and not np.array_equal(a[same[0]], a[same[1]]):
        other = "conv_bn_relu" if entry["kind"] == "conv_relu" else "conv_relu"
        raise ValueError(f"{where}: field 'kind' = {entry['kind']!r} does not match the arrays ({same[1]} differs "
                         f"from {same[0]}, as only a {other} layer's does); allowed: {other!r}")
    # an unpruned (baseline) run fills its FIFOs by observing, but applies no threshold
    if pruning_on and entry["fifo_full"] and entry["pruned"] and entry["tau"] is None:
        raise ValueError(f"{where}: field 'tau' is null with fifo_full true; allowed: the threshold applied")


class GoldenRecorder:
    """Captures the golden tensors of chosen conv layers during one forward/backward pass.

    Use: ``rec = GoldenRecorder(model, names); rec.attach(); loss.backward(); layers =
    rec.collect(); rec.detach()`` (``collect`` before the optimizer step, so W is the weight
    the step used and dW its gradient).
    """

    def __init__(self, model: nn.Module, layer_names: list[str] | None = None) -> None:
        convs = {name: (m, kind) for name, m, kind in conv_layers(model)}
        names = list(convs) if layer_names is None else list(layer_names)
        for n in names:
            if n not in convs:
                raise ValueError(f"layer = {n!r} is not a conv of this model; allowed: {', '.join(convs)}")
        self.convs = {n: convs[n] for n in names}
        self.pruners: dict[str, GradientPruner] = {n: p for n, p in pruners(model).items() if n in self.convs}
        self._handles: list[Any] = []
        self._io: dict[str, dict[str, torch.Tensor]] = {}

    def attach(self) -> None:
        self._io = {n: {} for n in self.convs}
        for name, (conv, _) in self.convs.items():
            self._handles.append(conv.register_forward_hook(self._forward_hook(name)))
            self._handles.append(conv.register_full_backward_hook(self._backward_hook(name)))
        for p in self.pruners.values():
            p.record = True

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for p in self.pruners.values():
            p.record = False
            p.last = None

    def _forward_hook(self, name: str):
        store = self._io[name]

        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            store["I"], store["O"] = inputs[0].detach().cpu().clone(), output.detach().cpu().clone()
        return hook

    def _backward_hook(self, name: str):
        store = self._io[name]

        def hook(module: nn.Module, grad_inputs: tuple, grad_outputs: tuple) -> None:
            # The conv's own gradients: an input that also feeds a shortcut gets more elsewhere.
            store["grad_O"] = grad_outputs[0].detach().cpu().clone()
            if grad_inputs[0] is not None:
                store["grad_I"] = grad_inputs[0].detach().cpu().clone()
        return hook

    def collect(self) -> list[LayerTensors]:
        out = []
        for name, (conv, kind) in self.convs.items():
            io = self._io[name]
            if "O" not in io:
                raise ValueError(f"layer {name}: no forward pass was recorded")
            pr = self.pruners.get(name)
            rec = pr.last if pr is not None else None
            a: dict[str, np.ndarray] = {"I": io["I"].numpy(), "W": conv.weight.detach().cpu().numpy().copy(),
                                        "O": io["O"].numpy()}
            if conv.bias is not None:
                a["b"] = conv.bias.detach().cpu().numpy().copy()
            if "grad_O" in io:
                if kind == "conv_relu":
                    a["relu_mask"] = (io["O"] > 0).to(torch.float32).numpy()
                    a["dO"] = a["dO_pruned"] = io["grad_O"].numpy()
                else:
                    # conv -> prune -> BN: the conv's output gradient is the pruned one.
                    a["dO"] = (rec.grad_in if rec is not None else io["grad_O"]).cpu().numpy()
                    a["dO_pruned"] = io["grad_O"].numpy()
            if "grad_I" in io:
                a["dI"] = io["grad_I"].numpy()
                a["dI_pruned"] = (rec.grad_out.cpu().numpy() if (kind == "conv_relu" and rec is not None)
                                  else a["dI"])
            if conv.weight.grad is not None:
                a["dW"] = conv.weight.grad.detach().cpu().numpy().copy()
            if conv.bias is not None and conv.bias.grad is not None:
                a["db"] = conv.bias.grad.detach().cpu().numpy().copy()
            out.append(LayerTensors(
                name=name, kind=kind, stride=int(conv.stride[0]), padding=int(conv.padding[0]),
                groups=int(conv.groups), kernel=int(conv.kernel_size[0]), pruned=pr is not None,
                tau=rec.tau if rec else None, tau_batch=rec.tau_batch if rec else None,
                fifo=rec.fifo if rec else [], fifo_full=rec.fifo_full if rec else False,
                seed=pr.seed if pr is not None else None, arrays=a))
        return out
