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
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .fixedpoint import check_param, choose_frac_bits
from .networks import conv_layers, prune_target
from .pruning import GradientPruner, pruners

FORMAT, VERSION = "sparsetrain-golden", 1
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
    if (path / MANIFEST_NAME).is_file() or not (path / "golden").is_dir():
        return path
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
    manifest = json.loads(man_path.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{man_path}: format = {manifest.get('format')!r}; allowed: {FORMAT!r}")
    if manifest.get("version") != VERSION:
        raise ValueError(f"{man_path}: version = {manifest.get('version')!r}; allowed: {VERSION}")
    arrays: dict[str, dict[str, np.ndarray]] = {}
    with np.load(npz_path, allow_pickle=False) as npz:
        stored = set(npz.files)
        expected = set()
        for lname, entry in manifest["layers"].items():
            arrays[lname] = {}
            for tname, meta in entry["arrays"].items():
                key = f"{lname}/{tname}"
                expected.add(key)
                if key not in stored:
                    raise ValueError(f"layer {lname}, array {tname}: missing from {npz_path}")
                a = npz[key]
                if list(a.shape) != list(meta["shape"]):
                    raise ValueError(f"layer {lname}, array {tname}: shape {list(a.shape)} does not match "
                                     f"the manifest's {meta['shape']}")
                if str(a.dtype) != meta["dtype"]:
                    raise ValueError(f"layer {lname}, array {tname}: dtype {a.dtype} does not match "
                                     f"the manifest's {meta['dtype']}")
                if sha256_of(a) != meta["sha256"]:
                    raise ValueError(f"layer {lname}, array {tname}: sha256 checksum does not match the manifest")
                arrays[lname][tname] = a
        extra = stored - expected
        if extra:
            raise ValueError(f"{npz_path}: arrays {sorted(extra)} are not in the manifest")
    return GoldenRun(path, manifest, arrays)


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
