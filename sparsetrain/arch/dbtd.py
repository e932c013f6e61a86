"""The pruning threshold rule: DBTD (Ye et al. 2019) and the threshold FIFO of SparseTrain's
Algorithm 1 (Dai et al. 2020), docs/architecture.md section 7.

* DBTD (distribution-based threshold determination): ``tau = c_p * mean|g|`` with
  ``c_p = Phi^-1((1 + p) / 2) * k_est``. ``k_est`` turns ``mean|g|`` into an estimate of sigma:
  ``sqrt(pi/2)`` ("unbiased": mean|g| of a normal distribution is ``sigma * sqrt(2/pi)``) or
  ``sqrt(2/pi)`` ("paper": the factor as the papers print it).
* The threshold FIFO: the last N_F batch thresholds of a layer; a batch is pruned with their mean
  once the FIFO is full, and pushing a new batch threshold drops the oldest.

The float training path (``golden.training.pruning``) uses these as they are; the PPU's integer
form (``golden.bitexact.ppu_model``) specialises only the FIFO's mean (``rne_shift`` by log2 N_F).
"""
from __future__ import annotations

import math
from collections import deque
from statistics import NormalDist

from .fixedpoint import check_param

# Estimator name -> k_est: sigma_hat = k_est * mean|g|.
ESTIMATOR_SCALE: dict[str, float] = {"unbiased": math.sqrt(math.pi / 2.0), "paper": math.sqrt(2.0 / math.pi)}
ESTIMATORS: tuple[str, ...] = tuple(ESTIMATOR_SCALE)


def check_rate(p: float) -> float:
    """Target pruning rate p must be a finite number in [0, 1) (p = 0: c_p = 0, nothing pruned)."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or not 0.0 <= p < 1.0:
        raise ValueError(f"p = {p!r} is out of range; allowed: 0 <= p < 1")
    return float(p)


def check_estimator(estimator: str) -> str:
    if estimator not in ESTIMATOR_SCALE:
        raise ValueError(f"estimator = {estimator!r} is out of range; allowed: {', '.join(ESTIMATORS)}")
    return estimator


def threshold_coefficient(p: float, estimator: str = "unbiased") -> float:
    """c_p such that the DBTD threshold is ``tau = c_p * mean|g|`` (mean over all n gradients).

    The PPU's threshold constant is ``c_p / n`` applied to the accumulated ``sum |g|``.
    """
    p = check_rate(p)
    return NormalDist().inv_cdf((1.0 + p) / 2.0) * ESTIMATOR_SCALE[check_estimator(estimator)]


class ThresholdFIFO:
    """Threshold FIFO of SparseTrain's Algorithm 1 (Dai et al. 2020): depth N_F, oldest entry dropped on push."""

    def __init__(self, depth: int) -> None:
        self.depth = check_param("N_F", depth)
        self._entries: deque = deque(maxlen=self.depth)

    @property
    def full(self) -> bool:
        return len(self._entries) == self.depth

    @property
    def entries(self) -> list:
        """Contents, oldest first."""
        return list(self._entries)

    @property
    def total(self):
        return sum(self._entries)

    def mean(self) -> float:
        if not self._entries:
            raise ValueError("ThresholdFIFO is empty; mean needs at least one pushed threshold")
        return self.total / len(self._entries)

    def predicted(self):
        """The threshold to prune the next batch with: the mean once the FIFO is full, else None."""
        return self.mean() if self.full else None

    def push(self, tau: float) -> None:
        if not math.isfinite(tau) or tau < 0.0:
            raise ValueError(f"tau = {tau!r} is out of range; allowed: a finite number >= 0")
        self._entries.append(tau)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
