"""`check` of the two training functions outside the row results (docs/architecture.md 7.2, 11.6):
the batch threshold the core pushed into its FIFOs and the bias gradients it read back.

Threshold (GTA of a pruned layer): every group's FIFO, read through the PPU status port, must hold
(a) the golden run's recorded FIFO entries the program restored, each within half an LSB of the
recorded float (the conversion, section 7.2), and (b) as its newest entry the hardware's tau_batch,
within the fixed-point bound of section 7.2 of the float DBTD threshold of the gradient the PPU
accumulated (the golden float tensors' masked dI of the compiled samples). The recorded tau_batch of
the training (of the unmasked dI) is reported next to it, with the ratio.

Bias gradient: the core's sums must equal the bit-accurate model's, lie within section 11.6's bound
of the float64 sum of the same dO, and (whole batch) within that bound plus float32 summation of
torch's ``conv.bias.grad`` of the golden run.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..arch.dbtd import threshold_coefficient
from ..arch.fixedpoint import sat_limit
from ..compiler.bias import BiasGradient
from ..compiler.compile import CompiledStep, LayerData

F32_U = 2.0 ** -24   # unit roundoff of float32 (torch's db)


def fifo_entries(statuses: Sequence[Any], n_f: int) -> list[int]:
    """The FIFO (oldest first) of one group from its n_f status reads (one per entry index)."""
    count = int(statuses[0].fifo_count)
    return [int(statuses[i].fifo_entry) for i in range(min(count, n_f))]


def threshold_check(c: CompiledStep, data: LayerData, fifos: Sequence[Sequence[int]]) -> dict[str, Any]:
    """Compare every group's FIFO after the GTA run with the recorded thresholds (module doc)."""
    th, t, p = c.threshold, c.tensors, c.params
    f = t.frac["dI"]
    lsb = 2.0 ** -f
    lim = sat_limit(p.dw)
    same = all(list(x) == list(fifos[0]) for x in fifos)
    fifo = list(fifos[0])
    recorded = [float(v) for v in data.tau_fifo][-p.n_f:]
    pushed = bool(th.get("end_batch"))
    kept = fifo[:-1] if pushed else fifo
    # the restored entries that survive the push: the newest len(kept) of the recorded FIFO
    rec_kept = recorded[len(recorded) - len(kept):] if kept else []
    conv_err = [abs(e * lsb - v) if not (e == lim and v / lsb >= lim) else 0.0 for e, v in zip(kept, rec_kept)]
    restored_ok = len(kept) == len(rec_kept) and all(err <= 0.5 * lsb for err in conv_err)
    out: dict[str, Any] = dict(groups_equal=same, fifo=fifo, recorded_fifo=recorded, restored_ok=restored_ok,
                               restored_max_error_lsb=max(conv_err, default=0.0) / lsb, end_batch=pushed)
    ok = same and restored_ok
    if pushed:
        tau_hw = fifo[-1] if fifo else -1
        mask = np.asarray(t.mask, bool)
        n = int(th["n"])
        c_p = threshold_coefficient(data.p, data.estimator)
        c_const = th["c_m"] * 2.0 ** -th["c_shift"]
        s_ref = float(np.abs(t.reference).sum())                 # masked dI, float64
        e_a = float(np.where(mask, t.bound, 0.0).sum()) / lsb    # |A_hw - 2**f S| <= e_a (section 2)
        tau_ref = c_p / n * s_ref / lsb                          # in LSBs
        bound = 0.5 + c_const * e_a + 2.0 ** -16 * tau_ref       # section 7.2
        err = abs(tau_hw - min(tau_ref, lim))
        rec = data.tau_batch
        out.update(tau_batch=tau_hw, tau_batch_float=tau_ref * lsb, tau_hw=tau_hw * lsb, error_lsb=err,
                   bound_lsb=bound, n=n, c_m=th["c_m"], c_shift=th["c_shift"], within=err <= bound)
        if rec:
            out.update(recorded_tau_batch=float(rec), ratio_to_recorded=tau_hw * lsb / float(rec))
        ok = ok and err <= bound
    out["ok"] = bool(ok)
    return out


def bias_check(bias: BiasGradient, rtl: Sequence[int], model: Sequence[int], data: LayerData,
               complete: bool) -> dict[str, Any]:
    """The core's db against the model (bit for bit), the float64 sum of the same dO, torch's db."""
    rtl_a, model_a = np.asarray(rtl, np.int64), np.asarray(model, np.int64)
    lsb = 2.0 ** -bias.frac
    value = model_a * lsb
    err = np.abs(value - bias.reference)
    within = bool(np.all(err <= bias.bound))
    out: dict[str, Any] = dict(channels=int(rtl_a.size), bit_exact=bool(np.array_equal(rtl_a, model_a)),
                               max_error=float(err.max(initial=0.0)), bound=float(bias.bound.max(initial=0.0)),
                               within=within, frac=bias.frac, terms=bias.terms)
    ok = out["bit_exact"] and within
    if complete and "db" in data.arrays:
        torch_db = np.asarray(data.arrays["db"], np.float64)
        n = bias.terms
        gamma = n * F32_U / (1 - n * F32_U)
        tb = bias.bound + gamma * bias.abs_sum   # + float32 summation of torch (any order)
        terr = np.abs(value - torch_db)
        out.update(torch_max_error=float(terr.max(initial=0.0)), torch_bound=float(tb.max(initial=0.0)),
                   torch_within=bool(np.all(terr <= tb)))
        ok = ok and out["torch_within"]
    out["ok"] = bool(ok)
    return out
