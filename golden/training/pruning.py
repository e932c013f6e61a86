"""Stochastic activation-gradient pruning (Ye et al. 2019; SparseTrain Algorithm 1).

Float reference of the algorithm that the PPU implements in integers (docs/architecture.md
section 7). Three pieces:

* DBTD threshold determination: ``tau = c_p * mean|g|`` with
  ``c_p = Phi^-1((1 + p) / 2) * k_est`` where ``k_est = sqrt(pi/2)`` for the unbiased
  estimator of sigma (default) and ``sqrt(2/pi)`` for the papers' printed one
  (/work/shared/design-notes.md explains both corrections).
* stochastic pruning: ``|g| >= tau`` kept, otherwise ``sign(g) * tau`` with probability
  ``|g| / tau`` and 0 otherwise, so the expectation is unchanged.
* threshold prediction: a FIFO of depth N_F of past batch thresholds per layer; a batch is
  pruned with the FIFO mean only once the FIFO is full, and the batch's own threshold (from
  its unpruned gradient) is pushed at the end of the batch.

The random source is a seedable generator per layer (numpy PCG64 for float32 CPU gradients,
for speed; a ``torch.Generator`` otherwise); the bit-accurate hardware
sequence (xorshift32) lives in ``golden.bitexact.ppu_model``.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import Tensor, nn

from ...arch.fixedpoint import check_param

ESTIMATORS = ("unbiased", "paper")
# sigma_hat = ESTIMATOR_SCALE[name] * mean|g|
ESTIMATOR_SCALE = {"unbiased": math.sqrt(math.pi / 2.0), "paper": math.sqrt(2.0 / math.pi)}
PRUNE_TARGETS = {"conv_relu": "dI", "conv_bn_relu": "dO"}


def check_rate(p: float) -> float:
    """Target pruning rate p must be a finite float in [0, 1)."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or not 0.0 <= p < 1.0:
        raise ValueError(f"p = {p!r} is out of range; allowed: 0 <= p < 1")
    return float(p)


def check_estimator(estimator: str) -> str:
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator = {estimator!r} is out of range; allowed: {', '.join(ESTIMATORS)}")
    return estimator


def threshold_coefficient(p: float, estimator: str = "unbiased") -> float:
    """c_p such that the DBTD threshold is ``tau = c_p * mean|g|`` (mean over all n gradients).

    ``c_p = Phi^-1((1 + p) / 2) * sqrt(pi/2)`` ("unbiased") or ``* sqrt(2/pi)`` ("paper").
    The PPU's threshold constant is ``c_p / n`` applied to the accumulated ``sum |g|``.
    """
    p = check_rate(p)
    return NormalDist().inv_cdf((1.0 + p) / 2.0) * ESTIMATOR_SCALE[check_estimator(estimator)]


def count_nonzero(t: Tensor) -> int:
    """``torch.count_nonzero(t)``, several times faster for CPU float32 and bool tensors.

    torch's CPU kernel takes about 15 ns per element (measured with torch 2.13 on the project's
    machine, benchmarks/bench_step_time.py); numpy's vectorised count 2-8 ns. The density
    counters of a training run call it twice per conv per step, which made it the largest
    single item of MobileNet's step (docs/reproduction.md). -0.0 counts as zero in both.
    """
    if t.device.type == "cpu" and t.dtype in (torch.float32, torch.bool):
        return int(np.count_nonzero(t.detach().numpy()))
    return int(torch.count_nonzero(t))


def dbtd_threshold(g: Tensor, p: float, estimator: str = "unbiased") -> float:
    """Distribution-based threshold of gradient ``g``: ``Phi^-1((1+p)/2) * sigma_hat``."""
    c_p = threshold_coefficient(p, estimator)
    if g.numel() == 0:
        raise ValueError("g has 0 elements; allowed: a non-empty gradient tensor")
    return c_p * float(g.detach().abs().mean(dtype=torch.float64))


def uniform_like(g: Tensor, generator: torch.Generator | np.random.Generator | None,
                 out: Tensor | None = None) -> Tensor:
    """Uniform [0, 1) numbers of g's shape (float32 from a numpy Generator, g's dtype from torch).

    The pruning layers use numpy's PCG64 because torch's CPU ``rand`` costs about as much as
    a small convolution's backward pass; ``out`` (float32, contiguous, CPU) avoids allocating.
    """
    if isinstance(generator, np.random.Generator):
        if out is None:
            out = torch.empty(g.shape, dtype=torch.float32)
        generator.random(out=out.numpy().reshape(-1), dtype=np.float32)
        return out if g.device.type == "cpu" else out.to(g.device)
    if generator is not None and generator.device != g.device:  # a CPU generator for a GPU gradient
        return torch.rand(g.shape, generator=generator, dtype=g.dtype).to(g.device)
    return torch.rand(g.shape, generator=generator, dtype=g.dtype, device=g.device)


def stochastic_prune(g: Tensor, tau: float, generator: torch.Generator | np.random.Generator | None = None,
                     *, magnitude: Tensor | None = None, random: Tensor | None = None) -> Tensor:
    """Keep ``|g| >= tau``; map smaller values to ``sign(g)*tau`` w.p. ``|g|/tau``, else 0.

    One uniform ``r`` in [0, 1) per element from ``generator`` (a ``torch.Generator``, a
    ``numpy.random.Generator``, or None for torch's global one); an element becomes
    ``sign(g)*tau`` when ``|g| > r * tau`` (Algorithm 1 of Ye et al.). Zeros stay zero;
    ``tau <= 0`` is a no-op. ``magnitude`` (a precomputed ``g.abs()``) and ``random`` (a
    float32 scratch buffer of g's shape) are overwritten when given, to save allocations.
    """
    if not math.isfinite(tau):
        raise ValueError(f"tau = {tau!r} is out of range; allowed: a finite float")
    if tau <= 0.0:
        return g
    r = uniform_like(g, generator, random).mul_(tau)
    mag = g.abs() if magnitude is None else magnitude
    # For |g| >= tau the test |g| > r*tau always passes (r < 1), so one comparison decides
    # keep-or-zero for every element, and the kept ones are sign(g) * max(|g|, tau).
    keep = mag > r
    return mag.clamp_(min=tau).copysign_(g).mul_(keep)


class ThresholdFIFO:
    """Threshold FIFO of SparseTrain Algorithm 1: depth N_F, oldest entry dropped on push."""

    def __init__(self, depth: int) -> None:
        self.depth = check_param("N_F", depth)
        self._entries: deque[float] = deque(maxlen=self.depth)

    @property
    def full(self) -> bool:
        return len(self._entries) == self.depth

    @property
    def entries(self) -> list[float]:
        """Contents, oldest first."""
        return list(self._entries)

    def mean(self) -> float:
        if not self._entries:
            raise ValueError("ThresholdFIFO is empty; mean needs at least one pushed threshold")
        return sum(self._entries) / len(self._entries)

    def predicted(self) -> float | None:
        """The threshold to prune the next batch with: mean of the FIFO once full, else None."""
        return self.mean() if self.full else None

    def push(self, tau: float) -> None:
        if not math.isfinite(tau) or tau < 0.0:
            raise ValueError(f"tau = {tau!r} is out of range; allowed: a finite float >= 0")
        self._entries.append(float(tau))

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True)
class PruneConfig:
    """How every pruning layer of a model behaves.

    p: target pruning rate in [0, 1); n_f: FIFO depth (architecture section 1: 1 .. 64);
    estimator: "unbiased" or "paper"; two_pass: prune each batch with its own threshold
    instead of the FIFO prediction; seed: base seed of the per-layer generators (layer i
    uses ``seed + i``; in distributed training rank r > 0 uses the stream of (seed, i, r)).
    """

    p: float = 0.9
    n_f: int = 4
    estimator: str = "unbiased"
    two_pass: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        check_rate(self.p)
        check_param("N_F", self.n_f)
        check_estimator(self.estimator)
        check_param("seed", self.seed, 0, 2**63 - 1)


@dataclass
class PruneStats:
    """Running counts of one pruning layer since the last reset (for per-epoch metrics)."""

    batches: int = 0
    pruned_batches: int = 0
    elements: int = 0
    nonzero_before: int = 0
    nonzero_after: int = 0
    tau_applied: list[float] = field(default_factory=list)

    @property
    def density_before(self) -> float | None:
        return self.nonzero_before / self.elements if self.elements else None

    @property
    def density_after(self) -> float | None:
        return self.nonzero_after / self.elements if self.elements else None


@dataclass
class PruneRecord:
    """What one backward pass through a pruning layer did (kept when ``record`` is set)."""

    grad_in: Tensor  # unpruned gradient
    grad_out: Tensor  # pruned gradient, passed on
    tau: float | None  # threshold applied, None while pruning is off
    tau_batch: float  # this batch's own DBTD threshold (pushed into the FIFO)
    fifo: list[float]  # FIFO contents used for this batch, oldest first (before the push)
    fifo_full: bool


class _PruneGrad(torch.autograd.Function):
    """Straight-through: identity forward, ``layer.prune_gradient`` backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, layer: "GradientPruner") -> Tensor:
        ctx.layer = layer
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return ctx.layer.prune_gradient(grad), None


def prune_grad(x: Tensor, layer: "GradientPruner") -> Tensor:
    """Apply the straight-through pruning Function (identity now, prunes the gradient later)."""
    return _PruneGrad.apply(x, layer)


class GradientPruner(nn.Module):
    """Pruning layer with per-layer state: FIFO, last thresholds, densities, generator.

    ``target`` says which gradient it prunes: "dI" (placed at a Conv-ReLU conv's input) or
    "dO" (between a conv and its BatchNorm). Forward is the identity.
    """

    def __init__(self, config: PruneConfig, *, layer_name: str = "", target: str = "dO",
                 layer_index: int = 0) -> None:
        super().__init__()
        if target not in ("dI", "dO"):
            raise ValueError(f"target = {target!r} is out of range; allowed: dI, dO")
        self.config = config
        self.layer_name = layer_name
        self.target = target
        self.layer_index = layer_index
        self.rank = 0  # distributed training: this process's rank (its own random stream)
        self.seed = config.seed + layer_index
        self.generator = np.random.default_rng(self.seed)  # float32 CPU gradients (the fast path)
        self._torch_generator = torch.Generator().manual_seed(self.seed)  # other dtypes / devices
        # Distributed training: sums a float64 tensor over ranks in place. Set, the batch
        # threshold comes from the global sum|g| and element count (every rank pushes the same tau).
        self.reduce: Callable[[Tensor], Tensor] | None = None
        self._pending: tuple[float, int] | None = None  # FIFO mode: local (sum|g|, n) awaiting push_pending
        self._mag: Tensor | None = None
        self._random: Tensor | None = None
        self._keep: Tensor | None = None
        self.fifo = ThresholdFIFO(config.n_f)
        self.enabled = True  # False: not even in the graph (forward returns x untouched)
        self.active = True  # False: observe only (densities, thresholds), never prune
        self.record = False
        self.last: PruneRecord | None = None
        self.last_tau: float | None = None
        self.last_tau_batch: float | None = None
        self.stats = PruneStats()

    def extra_repr(self) -> str:
        c = self.config
        return f"{self.layer_name or '?'}: prunes {self.target}, p={c.p}, N_F={c.n_f}, {c.estimator}" + (
            ", two-pass" if c.two_pass else "")

    def forward(self, x: Tensor) -> Tensor:
        if not self.enabled or not x.requires_grad:
            return x
        return prune_grad(x, self)

    def prune_gradient(self, g: Tensor) -> Tensor:
        """One batch of Algorithm 1: prune with the predicted (or own) threshold, then push."""
        cfg = self.config
        fast = g.device.type == "cpu" and g.dtype == torch.float32 and g.is_contiguous()
        if fast and (self._mag is None or self._mag.shape != g.shape):
            # Scratch buffers reused every step: fresh multi-MB tensors cost page faults.
            self._mag, self._random = torch.empty_like(g), torch.empty_like(g)
            self._keep = torch.empty(g.shape, dtype=torch.bool)
        mag = torch.abs(g, out=self._mag) if fast else g.abs()  # shared by threshold and pruning
        abs_sum, count = float(mag.sum()), g.numel()
        deferred = self.reduce is not None and not cfg.two_pass
        if self.reduce is not None and cfg.two_pass:  # needed now: this batch is pruned with it
            abs_sum, count = self.reduce(torch.tensor([abs_sum, count], dtype=torch.float64)).tolist()
        # FIFO mode under torch.distributed: the threshold is only pushed at the end of the batch,
        # so push_pending reduces every layer's sum in one all-reduce after the backward pass.
        tau_batch = None if deferred else threshold_coefficient(cfg.p, cfg.estimator) * abs_sum / count
        fifo_before, fifo_full = self.fifo.entries, self.fifo.full
        tau = tau_batch if cfg.two_pass else self.fifo.predicted()
        if not self.active:
            tau = None
        nnz_before = count_nonzero(g)
        out, nnz_after = g, nnz_before
        if tau is not None and tau > 0.0:
            if fast:
                r = uniform_like(g, self.generator, self._random).mul_(tau)
                keep = torch.gt(mag, r, out=self._keep)
                # |g| >= tau always passes |g| > r*tau, so keep decides for every element.
                out = torch.mul(mag.clamp_min_(tau).copysign_(g), keep)
                nnz_after = count_nonzero(keep)
            else:
                out = stochastic_prune(g, tau, self._torch_generator, magnitude=mag)
                nnz_after = count_nonzero(out)
        if deferred:
            self._pending = (abs_sum, count)
        else:
            self.fifo.push(tau_batch)
        self.last_tau, self.last_tau_batch = tau, tau_batch
        s = self.stats
        s.batches += 1
        s.elements += g.numel()
        s.nonzero_before += nnz_before
        s.nonzero_after += nnz_after
        if tau is not None:
            s.pruned_batches += 1
            s.tau_applied.append(tau)
        if self.record:
            self.last = PruneRecord(g.detach().clone(), out.detach().clone(), tau, tau_batch, fifo_before, fifo_full)
        return out

    def finish_pending(self, abs_sum: float, count: float) -> float:
        """Push the batch threshold from the global ``sum|g|`` and element count (see push_pending)."""
        cfg = self.config
        tau_batch = threshold_coefficient(cfg.p, cfg.estimator) * abs_sum / count
        self._pending = None
        self.fifo.push(tau_batch)
        self.last_tau_batch = tau_batch
        if self.last is not None:
            self.last.tau_batch = tau_batch
        return tau_batch

    def set_rank(self, rank: int) -> None:
        """Distributed training: reseed with this rank's own stream, seeded by (seed, layer, rank).

        Rank 0 keeps the single-process stream; ranks never share random numbers.
        """
        self.rank = check_param("rank", rank, 0, 1 << 20)
        self.reset_state()

    def _stream_seed(self) -> int | list[int]:
        return self.seed if self.rank == 0 else [self.config.seed, self.layer_index, self.rank]

    def rng_state(self) -> dict[str, Any]:
        """FIFO, generators and running stats (a checkpoint); :meth:`load_rng_state` restores them."""
        return {"fifo": self.fifo.entries, "numpy": self.generator.bit_generator.state,
                "torch": self._torch_generator.get_state(), "last_tau": self.last_tau,
                "last_tau_batch": self.last_tau_batch, "stats": dict(vars(self.stats)), "rank": self.rank}

    def load_rng_state(self, state: dict[str, Any]) -> None:
        self.rank = int(state["rank"])
        self.fifo.clear()
        for tau in state["fifo"]:
            self.fifo.push(tau)
        self.generator.bit_generator.state = state["numpy"]
        self._torch_generator.set_state(state["torch"])
        self.last_tau, self.last_tau_batch = state["last_tau"], state["last_tau_batch"]
        self.stats = PruneStats(**{**state["stats"], "tau_applied": list(state["stats"]["tau_applied"])})

    def reset_stats(self) -> PruneStats:
        """Return the stats gathered so far and start new ones (called once per epoch)."""
        old, self.stats = self.stats, PruneStats()
        return old

    def reset_state(self) -> None:
        """Forget the FIFO and reseed the generator (a fresh training run)."""
        self.fifo.clear()
        seed = self._stream_seed()
        self.generator = np.random.default_rng(seed)
        self._torch_generator.manual_seed(seed if isinstance(seed, int)
                                          else int(np.random.SeedSequence(seed).generate_state(1, np.uint64)[0] >> 1))
        self._pending = None
        self.last = self.last_tau = self.last_tau_batch = None
        self.stats = PruneStats()


def pruners(model: nn.Module) -> dict[str, GradientPruner]:
    """Every pruning layer of ``model`` keyed by the qualified name of the conv it serves."""
    return {m.layer_name: m for m in model.modules() if isinstance(m, GradientPruner)}


def push_pending(layers: Iterable[GradientPruner], reduce: Callable[[Tensor], Tensor]) -> None:
    """End of a batch under torch.distributed (FIFO mode): one all-reduce of every layer's
    ``[sum|g|, n]``, then each layer pushes the global batch threshold, the same on every rank."""
    pending = [p for p in layers if p._pending is not None]
    if not pending:
        return
    sums = reduce(torch.tensor([v for p in pending for v in p._pending], dtype=torch.float64)).tolist()
    for i, p in enumerate(pending):
        p.finish_pending(sums[2 * i], sums[2 * i + 1])
