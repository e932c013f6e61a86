"""Campfire structured weight sparsity during training (Campfire sections 2 and 2.1, appendix A).

* **Schedule.** Campfire's equation (1) was lost from the text; /work/shared/design-notes.md
  restores it as Zhu and Gupta's gradual schedule
  ``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / n) ** e`` for ``t0 <= t <= t0 + n``
  (``s_i = 0``, exponent ``e`` default 3). The pruning era is the ``n`` epochs
  ``t0 .. t0 + n - 1``; ``t`` is measured at the *end* of a step (resolution "step": the
  fractional epoch; "epoch": the end of the current epoch, one target per epoch as the paper
  words it), so the last step of the era prunes to exactly ``s_f``.
* **Masks** are re-evaluated after every optimiser step during the era and fixed after it.
  A pruned weight stays pruned: masks only ever lose entries, the weight's gradient is zeroed
  (a hook), and after each step the weight and its momentum buffer are multiplied by the mask
  (momentum would otherwise move a just-pruned weight away from zero).
* **Per layer**, never by sorting the whole network (section 2.1):
  - window: every K x K kernel keeps at most ``ceil((1 - s) K^2)`` weights, its largest. The
    layer's budget ``round((1 - s) * numel)`` is spread as ``m`` or ``m + 1`` per kernel; the
    ``m + 1`` go to the kernels whose ``(m + 1)``-th largest weight is largest, so the layer
    reaches its target to within one weight, not only to within ``1 / K^2``.
  - ck: whole kernels, ranked by the largest magnitude in the kernel (Algorithm 1), pruned
    until the layer reaches its target (overshoot below one kernel).
  - combined: window at ``window_fraction * s`` (default 0.8), then ck up to ``s``.
  - fully connected: "fine" (single weights by magnitude) or "block" (``n x n`` blocks by
    summed magnitude); every output neuron keeps at least one non-zero input weight; the
    inputs of the first FC layer fed by channels that the last convolution pruned entirely
    are removed with their weights before the rest is ranked (they count towards the target).
* A conv filter whose kernels are all pruned also loses its bias (conv_relu layers), so its
  output channel is exactly zero: that is what makes the FC input rule sound (Figure 3
  assumes a zero channel). Convs followed by BatchNorm keep a constant ``beta`` output, so
  the FC input rule only applies when the last conv is a conv_relu layer (AlexNet here).
"""
from __future__ import annotations

import io
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from ...arch.fixedpoint import check_param
from ...outdir import atomic_write_bytes, atomic_write_text

PRUNING_MODES = ("window", "ck", "combined")
FC_MODES = ("fine", "block", "none")
RESOLUTIONS = ("epoch", "step")
MASKS_NAME, MASKS_META_NAME = "weight_masks.npz", "weight_masks.json"
MASKS_FORMAT, MASKS_VERSION = "sparsetrain-weight-masks", 1


def _check_fraction(name: str, value: float, *, upper_open: bool = True) -> float:
    ok = (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
          and 0.0 <= value and (value < 1.0 if upper_open else value <= 1.0))
    if not ok:
        raise ValueError(f"{name} = {value!r} is out of range; allowed: 0 <= {name} {'<' if upper_open else '<='} 1")
    return float(value)


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} = {value!r} is out of range; allowed: {', '.join(allowed)}")
    return value


@dataclass(frozen=True)
class WeightPruneConfig:
    """Campfire settings; ``sparsity`` is the final per-layer target ``s_f``."""

    sparsity: float
    mode: str = "window"
    era_start: int = 0
    era_length: int = 1
    exponent: float = 3.0
    window_fraction: float = 0.8  # combined: share of the epoch's target done by window pruning
    fc_mode: str = "fine"
    fc_block: int = 4  # the text's "n x n (n 5)" lost its relation sign; 4 divides the networks' widths
    resolution: str = "epoch"

    def __post_init__(self) -> None:
        _check_fraction("weight_sparsity", self.sparsity)
        _check_choice("weight_pruning", self.mode, PRUNING_MODES)
        check_param("era_start", self.era_start, 0, 1 << 20)
        check_param("era_length", self.era_length, 1, 1 << 20)
        if isinstance(self.exponent, bool) or not isinstance(self.exponent, (int, float)) or not (
                math.isfinite(self.exponent) and 0.0 < self.exponent <= 100.0):
            raise ValueError(f"prune_exponent = {self.exponent!r} is out of range; allowed: 0 < exponent <= 100")
        _check_fraction("window_fraction", self.window_fraction, upper_open=False)
        _check_choice("fc_pruning", self.fc_mode, FC_MODES)
        check_param("fc_block", self.fc_block, 1, 1024)
        _check_choice("prune_resolution", self.resolution, RESOLUTIONS)

    @property
    def era_end(self) -> int:
        """First epoch after the era: masks are fixed from its first step on."""
        return self.era_start + self.era_length


def scheduled_sparsity(t: float, final: float, era_start: float, era_length: float, exponent: float = 3.0,
                       initial: float = 0.0) -> float:
    """Gradual schedule (design notes): initial before the era, final after it, cubic (``exponent``) in between."""
    if era_length <= 0:
        raise ValueError(f"era_length = {era_length!r} is out of range; allowed: > 0")
    if t <= era_start:
        return initial
    if t >= era_start + era_length:
        return final
    return final + (initial - final) * (1.0 - (t - era_start) / era_length) ** exponent


def step_target(cfg: WeightPruneConfig, epoch: int, step_in_epoch: int, steps_per_epoch: int) -> float | None:
    """The sparsity a step of the era prunes to after its update; None outside the era."""
    if not cfg.era_start <= epoch < cfg.era_end:
        return None
    t = epoch + 1.0 if cfg.resolution == "epoch" else epoch + (step_in_epoch + 1) / steps_per_epoch
    return scheduled_sparsity(t, cfg.sparsity, cfg.era_start, cfg.era_length, cfg.exponent)


# ----------------------------------------------------------------------------------------- masks

def _kernels(t: Tensor) -> Tensor:
    """[F, C/g, K, K] -> [F * C/g, K * K] (a view)."""
    return t.reshape(t.shape[0] * t.shape[1], -1)


def _alive_score(weight: Tensor, alive: Tensor) -> Tensor:
    """|w| where alive, -1 where pruned: a pruned weight ranks below every live one (even a live 0)."""
    return torch.where(alive, weight.detach().abs(), torch.full_like(weight, -1.0, dtype=weight.dtype))


def window_mask(weight: Tensor, sparsity: float, alive: Tensor | None = None) -> Tensor:
    """Window pruning of a conv weight [F, C/g, K, K]: each kernel keeps at most ``ceil((1-s) K^2)``."""
    _check_fraction("sparsity", sparsity, upper_open=False)
    alive = torch.ones_like(weight, dtype=torch.bool) if alive is None else alive
    score, live = _kernels(_alive_score(weight, alive)), _kernels(alive)
    n_kern, kk = score.shape
    keep_total = round((1.0 - sparsity) * n_kern * kk)
    m_lo, extra = divmod(keep_total, n_kern)
    ordered, order = torch.sort(score, dim=1, descending=True, stable=True)
    budget = torch.full((n_kern,), m_lo, dtype=torch.long)
    if extra:
        # The kernels that lose least by keeping one more: largest (m+1)-th weight (ties: lowest index).
        pick = torch.sort(ordered[:, m_lo], descending=True, stable=True).indices[:extra]
        budget[pick] += 1
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(kk).expand(n_kern, kk).contiguous())
    return ((rank < budget[:, None]) & live).reshape(weight.shape)


def ck_mask(weight: Tensor, sparsity: float, alive: Tensor | None = None) -> Tensor:
    """CK pruning: zero whole kernels, smallest max|w| first, until ``round(s * numel)`` weights are pruned."""
    _check_fraction("sparsity", sparsity, upper_open=False)
    alive = torch.ones_like(weight, dtype=torch.bool) if alive is None else alive
    live = _kernels(alive)
    need = round(sparsity * alive.numel()) - int((~alive).sum())
    out = live.clone()
    if need <= 0:
        return out.reshape(weight.shape)
    counts = live.sum(1)
    kernel_max = _kernels(_alive_score(weight, alive)).amax(1)
    candidates = torch.nonzero(counts > 0).flatten()
    candidates = candidates[torch.sort(kernel_max[candidates], stable=True).indices]
    reached = torch.cumsum(counts[candidates], 0)
    n_prune = min(int(torch.searchsorted(reached, torch.tensor([need]))[0]) + 1, len(candidates))
    out[candidates[:n_prune]] = False
    return out.reshape(weight.shape)


def combined_mask(weight: Tensor, sparsity: float, alive: Tensor | None = None,
                  window_fraction: float = 0.8) -> Tensor:
    """Window pruning at ``window_fraction * s``, then CK pruning up to ``s`` (appendix A, Algorithm 4)."""
    return ck_mask(weight, sparsity, window_mask(weight, window_fraction * sparsity, alive))


def conv_mask(weight: Tensor, sparsity: float, mode: str, alive: Tensor | None = None,
              window_fraction: float = 0.8) -> Tensor:
    _check_choice("weight_pruning", mode, PRUNING_MODES)
    if mode == "window":
        return window_mask(weight, sparsity, alive)
    if mode == "ck":
        return ck_mask(weight, sparsity, alive)
    return combined_mask(weight, sparsity, alive, window_fraction)


def _row_protect(score: Tensor, alive: Tensor) -> Tensor:
    """Each output row's largest live weight (rows with no live weight protect nothing)."""
    best = score.argmax(1)
    protect = torch.zeros_like(alive)
    rows = torch.nonzero(alive.any(1)).flatten()
    protect[rows, best[rows]] = True
    return protect


def fc_fine_mask(weight: Tensor, sparsity: float, alive: Tensor | None = None) -> Tensor:
    """Fine FC pruning of [out, in]: smallest live weights, never an output row's last live one."""
    _check_fraction("sparsity", sparsity, upper_open=False)
    alive = torch.ones_like(weight, dtype=torch.bool) if alive is None else alive
    out = alive.clone()
    need = round(sparsity * alive.numel()) - int((~alive).sum())
    if need <= 0:
        return out
    score = _alive_score(weight, alive)
    eligible = alive & ~_row_protect(score, alive)
    flat = torch.nonzero(eligible.flatten()).flatten()
    k = min(need, len(flat))
    if k:
        drop = flat[torch.sort(score.flatten()[flat], stable=True).indices[:k]]
        out.view(-1)[drop] = False
    return out


def fc_block_mask(weight: Tensor, sparsity: float, alive: Tensor | None = None, block: int = 4) -> Tensor:
    """Block FC pruning: ``block x block`` tiles by summed |w| (edge tiles may be smaller), smallest
    first, skipping a tile whose removal would leave an output row without a live weight."""
    _check_fraction("sparsity", sparsity, upper_open=False)
    check_param("fc_block", block, 1, 1024)
    alive = torch.ones_like(weight, dtype=torch.bool) if alive is None else alive
    out = alive.clone()
    need = round(sparsity * alive.numel()) - int((~alive).sum())
    if need <= 0:
        return out
    rows, cols = weight.shape
    br, bc = -(-rows // block), -(-cols // block)
    live_f = nn.functional.pad(alive.to(weight.dtype), (0, bc * block - cols, 0, br * block - rows))
    mag_f = nn.functional.pad(weight.detach().abs(), (0, bc * block - cols, 0, br * block - rows)) * live_f
    per_row = live_f.reshape(br, block, bc, block).sum(3).round().long()  # [br, block rows, bc]: live per tile row
    counts = per_row.sum(1).flatten()
    mag = mag_f.reshape(br, block, bc, block).sum((1, 3)).flatten()
    candidates = torch.nonzero(counts > 0).flatten()
    candidates = candidates[torch.sort(mag[candidates], stable=True).indices]
    reached = torch.cumsum(counts[candidates], 0)
    n_prune = min(int(torch.searchsorted(reached, torch.tensor([need]))[0]) + 1, len(candidates))
    drop = torch.zeros(br * bc, dtype=torch.bool)
    drop[candidates[:n_prune]] = True
    row_live = per_row.sum(2)  # [br, block]
    left = row_live - (per_row * drop.reshape(br, 1, bc)).sum(2)
    if bool(((left == 0) & (row_live > 0)).any()):
        # Rare: the plain prefix would cut an output off. Greedy pass with the row rule.
        drop[:] = False
        left, pruned = row_live.clone(), 0
        for tile in candidates.tolist():
            if pruned >= need:
                break
            r, c = divmod(tile, bc)
            after = left[r] - per_row[r, :, c]
            if bool(((after == 0) & (left[r] > 0)).any()):
                continue
            left[r], drop[tile] = after, True
            pruned += int(counts[tile])
    drop_full = drop.reshape(br, 1, bc, 1).expand(br, block, bc, block).reshape(br * block, bc * block)
    return out & ~drop_full[:rows, :cols]


def dead_filters(conv_weight_mask: Tensor) -> Tensor:
    """Bool [F]: filters whose every weight is pruned."""
    return ~conv_weight_mask.reshape(conv_weight_mask.shape[0], -1).any(1)


def fc_input_rule(alive: Tensor, dead_channels: Tensor, spatial: int) -> Tensor:
    """Remove the FC inputs fed by dead channels (input ``j`` comes from channel ``j // spatial``)."""
    check_param("spatial", spatial, 1, 1 << 30)
    if alive.shape[1] != dead_channels.numel() * spatial:
        raise ValueError(f"spatial = {spatial} does not match: FC has {alive.shape[1]} inputs, "
                         f"conv has {dead_channels.numel()} channels")
    dead_inputs = dead_channels.repeat_interleave(spatial)
    return alive & ~dead_inputs[None, :]


# ----------------------------------------------------------------------------------------- training

@dataclass
class PrunedLayer:
    name: str  # qualified module name
    module: nn.Module
    kind: str  # "conv" or "fc"
    weight_mask: Tensor
    bias_mask: Tensor | None


def input_rule_pair(model: nn.Module) -> tuple[str, str, int] | None:
    """(last conv, first FC, spatial positions per channel) when a pruned filter of the last conv
    gives a zero channel (a conv_relu layer, no BatchNorm), the FC input count matches and the
    flatten order is channel-major; None otherwise (ResNet, MobileNet)."""
    from .networks import conv_layers

    convs = conv_layers(model)
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not convs or not linears:
        return None
    conv_name, conv, kind = convs[-1]
    fc_name, fc = linears[0]
    if kind != "conv_relu" or fc.in_features % conv.out_channels:
        return None
    return conv_name, fc_name, fc.in_features // conv.out_channels


class CampfirePruner:
    """Applies Campfire to a model during training: call ``after_step`` after every optimiser step."""

    def __init__(self, model: nn.Module, cfg: WeightPruneConfig) -> None:
        from .networks import conv_layers

        self.cfg = cfg
        self.model = model
        self.layers: list[PrunedLayer] = []
        for name, conv, kind in conv_layers(model):
            bias = torch.ones_like(conv.bias, dtype=torch.bool) if conv.bias is not None and kind == "conv_relu" else None
            self.layers.append(PrunedLayer(name, conv, "conv", torch.ones_like(conv.weight, dtype=torch.bool), bias))
        if cfg.fc_mode != "none":
            for name, fc in model.named_modules():
                if isinstance(fc, nn.Linear):
                    self.layers.append(PrunedLayer(name, fc, "fc", torch.ones_like(fc.weight, dtype=torch.bool), None))
        self.by_name = {lay.name: lay for lay in self.layers}
        self.rule = input_rule_pair(model) if cfg.fc_mode != "none" else None
        self.frozen = False
        self.frozen_at_step: int | None = None
        self.last_target: float | None = None
        self.updates = 0
        self._handles = []
        for lay in self.layers:
            self._handles.append(lay.module.weight.register_hook(self._zero_grad(lay, "weight_mask")))
            if lay.bias_mask is not None:
                self._handles.append(lay.module.bias.register_hook(self._zero_grad(lay, "bias_mask")))

    @staticmethod
    def _zero_grad(lay: PrunedLayer, attr: str) -> Callable[[Tensor], Tensor]:
        def hook(g: Tensor) -> Tensor:
            return g * getattr(lay, attr).to(g.dtype)
        return hook

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def target(self, epoch: int, step_in_epoch: int, steps_per_epoch: int) -> float | None:
        return step_target(self.cfg, epoch, step_in_epoch, steps_per_epoch)

    def update_masks(self, sparsity: float) -> None:
        """Re-evaluate every layer's mask at ``sparsity`` (masks only lose entries)."""
        cfg = self.cfg
        for lay in self.layers:
            if lay.kind != "conv":
                continue
            w = lay.module.weight
            lay.weight_mask = conv_mask(w, sparsity, cfg.mode, lay.weight_mask, cfg.window_fraction)
            if lay.bias_mask is not None:
                lay.bias_mask = lay.bias_mask & ~dead_filters(lay.weight_mask)
        for lay in self.layers:
            if lay.kind != "fc":
                continue
            alive = lay.weight_mask
            if self.rule is not None and lay.name == self.rule[1]:
                conv = self.by_name[self.rule[0]]
                alive = fc_input_rule(alive, dead_filters(conv.weight_mask), self.rule[2])
            w = lay.module.weight
            lay.weight_mask = (fc_fine_mask(w, sparsity, alive) if cfg.fc_mode == "fine"
                               else fc_block_mask(w, sparsity, alive, cfg.fc_block))
        self.updates += 1

    @torch.no_grad()
    def apply(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Zero the pruned weights and their optimiser momentum."""
        for lay in self.layers:
            for param, mask in ((lay.module.weight, lay.weight_mask), (lay.module.bias, lay.bias_mask)):
                if mask is None:
                    continue
                param.mul_(mask.to(param.dtype))
                state = optimizer.state.get(param, {}) if optimizer is not None else {}
                buf = state.get("momentum_buffer")
                if buf is not None:
                    buf.mul_(mask.to(buf.dtype))

    def after_step(self, optimizer: torch.optim.Optimizer | None, epoch: int, step_in_epoch: int,
                   steps_per_epoch: int, global_step: int) -> float | None:
        """Prune after an optimiser step (during the era), then enforce the masks. Returns the target."""
        target = None if self.frozen else self.target(epoch, step_in_epoch, steps_per_epoch)
        if target is not None:
            self.update_masks(target)
            self.last_target = target
        if not self.frozen and (epoch > self.cfg.era_end - 1 or (epoch == self.cfg.era_end - 1
                                                                 and step_in_epoch == steps_per_epoch - 1)):
            self.frozen, self.frozen_at_step = True, global_step
        self.apply(optimizer)
        return target

    def state(self) -> dict[str, Any]:
        """Masks, era position and counters (a checkpoint); :meth:`load_state` restores them."""
        return {"masks": {lay.name: (lay.weight_mask.cpu(), None if lay.bias_mask is None else lay.bias_mask.cpu())
                          for lay in self.layers},
                "frozen": self.frozen, "frozen_at_step": self.frozen_at_step, "last_target": self.last_target,
                "updates": self.updates}

    def load_state(self, state: dict[str, Any]) -> None:
        for lay in self.layers:
            w, b = state["masks"][lay.name]
            lay.weight_mask = w.to(lay.weight_mask.device)
            lay.bias_mask = None if b is None else b.to(lay.weight_mask.device)
        self.frozen, self.frozen_at_step = state["frozen"], state["frozen_at_step"]
        self.last_target, self.updates = state["last_target"], state["updates"]

    def mask_tensors(self) -> list[Tensor]:
        """Every mask, in layer order (to check that all ranks hold the same)."""
        return [m for lay in self.layers for m in (lay.weight_mask, lay.bias_mask) if m is not None]

    def sparsity(self) -> dict[str, dict[str, float]]:
        """Per layer: true weight sparsity (fraction of zero weights) and mask sparsity."""
        out = {}
        for lay in self.layers:
            w = lay.module.weight.detach()
            rec = {"weight_sparsity": float((w == 0).sum()) / w.numel(),
                   "mask_sparsity": float((~lay.weight_mask).sum()) / w.numel()}
            if lay.kind == "conv":
                rec["zero_kernels"] = float((~_kernels(w != 0).any(1)).float().mean())
            out[lay.name] = rec
        return out

    def overall_sparsity(self) -> dict[str, float | None]:
        """Fraction of zero weights over all conv layers, all FC layers, and both together."""
        zeros = {"conv": 0, "fc": 0}
        total = {"conv": 0, "fc": 0}
        for lay in self.layers:
            w = lay.module.weight.detach()
            zeros[lay.kind] += int((w == 0).sum())
            total[lay.kind] += w.numel()
        out: dict[str, float | None] = {k: zeros[k] / total[k] if total[k] else None for k in zeros}
        out["all"] = sum(zeros.values()) / max(1, sum(total.values()))
        return out

    def save(self, run_dir: str | Path) -> Path:
        """Write ``weight_masks.npz`` (``<module>/weight``, ``<module>/bias``: uint8, 1 = kept) and its JSON."""
        run_dir = Path(run_dir)
        arrays: dict[str, np.ndarray] = {}
        layers: dict[str, Any] = {}
        for lay in self.layers:
            arrays[f"{lay.name}/weight"] = lay.weight_mask.cpu().numpy().astype(np.uint8)
            if lay.bias_mask is not None:
                arrays[f"{lay.name}/bias"] = lay.bias_mask.cpu().numpy().astype(np.uint8)
            layers[lay.name] = {"kind": lay.kind, "shape": list(lay.weight_mask.shape),
                                "mask_sparsity": float((~lay.weight_mask).sum()) / lay.weight_mask.numel()}
        buf = io.BytesIO()  # written whole, then renamed (sparsetrain.outdir)
        np.savez_compressed(buf, **arrays)
        atomic_write_bytes(run_dir / MASKS_NAME, buf.getvalue())
        meta = {"format": MASKS_FORMAT, "version": MASKS_VERSION, "config": asdict(self.cfg),
                "frozen": self.frozen, "frozen_at_step": self.frozen_at_step,
                "input_rule": list(self.rule) if self.rule else None, "layers": layers}
        atomic_write_text(run_dir / MASKS_META_NAME, json.dumps(meta, indent=1) + "\n")
        return run_dir / MASKS_NAME


def load_masks(run_dir: str | Path) -> dict[str, np.ndarray]:
    """The masks a run saved: ``{"<module>/weight": bool array, ...}`` (True = kept)."""
    run_dir = Path(run_dir)
    meta_path, npz_path = run_dir / MASKS_META_NAME, run_dir / MASKS_NAME
    if not npz_path.is_file() or not meta_path.is_file():
        raise FileNotFoundError(f"{run_dir} has no weight masks ({MASKS_NAME}, {MASKS_META_NAME}): "
                                "train with --weight-sparsity")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != MASKS_FORMAT or meta.get("version") != MASKS_VERSION:
        raise ValueError(f"{meta_path}: format {meta.get('format')!r} version {meta.get('version')!r}; "
                         f"expected {MASKS_FORMAT!r} version {MASKS_VERSION}")
    with np.load(npz_path) as z:
        masks = {k: z[k].astype(bool) for k in z.files}
    for name, info in meta["layers"].items():
        key = f"{name}/weight"
        if key not in masks or list(masks[key].shape) != info["shape"]:
            raise ValueError(f"{npz_path}: mask {key!r} missing or not of shape {info['shape']}")
    return masks


def zero_kernel_rows(weight_mask: np.ndarray) -> np.ndarray:
    """Bool [F, C/g, K]: kernel rows whose K weights are all pruned (the row ops a compiler can skip)."""
    if weight_mask.ndim != 4:
        raise ValueError(f"weight_mask.ndim = {weight_mask.ndim} is out of range; allowed: 4")
    return ~weight_mask.astype(bool).any(axis=3)


# ------------------------------------------------------------------------------- hardware path

def weight_row_ops(step: str, ops: list, live_rows: np.ndarray | None, weight_channel: Callable[[int], int]) -> list:
    """The row ops of one unit (docs/architecture.md 10.1) that the core must run when the kernel rows
    with ``live_rows[f, c_w, kr] == False`` are zero (Forward, GTA) or pruned (GTW).

    Forward / GTA: an op whose kernel row is all zero adds nothing, so it is skipped; a unit keeps
    at least its first op so that its result row (bias, ReLU, pruning) is still produced by the
    PPU exactly as before. GTW: the unit of a pruned kernel row computes a gradient that the mask
    zeroes anyway, so the whole unit is dropped (empty list; its result row is 0).
    """
    if live_rows is None:
        return ops
    if step == "gtw":
        o = ops[0]
        return ops if live_rows[o.f, weight_channel(o.c), o.kr] else []
    kept = [o for o in ops if live_rows[o.f, weight_channel(o.c), o.kr]]
    return kept or ops[:1]


def live_weight_rows(weight: np.ndarray) -> np.ndarray:
    """Bool [F, C/g, K]: kernel rows with at least one non-zero weight."""
    if weight.ndim != 4:
        raise ValueError(f"weight.ndim = {weight.ndim} is out of range; allowed: 4")
    return np.asarray(weight != 0).any(axis=3)


def find_masks(path: str | Path) -> Path | None:
    """The run directory holding weight masks, given it or a golden/step_N directory in it (None: no masks)."""
    p = Path(path).resolve()
    for d in (p, *list(p.parents)[:2]):  # the run dir, or golden/step_N below it
        if (d / MASKS_NAME).is_file() and (d / MASKS_META_NAME).is_file():
            return d
    return None
