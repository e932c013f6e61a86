"""The report of one checked layer step: its numbers (``CheckReport``), its text and its JSON.

``harness.check_compiled`` fills a ``CheckReport``; ``text()`` is what `sparsetrain check` prints
and the demo and `check --all` tabulate; ``write_report`` writes a list of them as JSON.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .simconfig import TIMEOUT_CODE



@dataclass
class Mismatch:
    tensor: str
    index: tuple[int, ...]      # (n, channel, row, column) or (f, c, kr, k) for dW
    rtl: int
    model: int

    def __str__(self) -> str:
        names = ("f", "c", "kr", "k") if self.tensor == "dW" else ("n", "channel", "row", "column")
        where = ", ".join(f"{a} = {b}" for a, b in zip(names, self.index))
        return f"{self.tensor}[{where}]: RTL {self.rtl}, model {self.model}"


@dataclass
class CheckReport:
    layer: str
    step: str
    sim: str
    samples: int
    batch: int
    units: int
    ops: int
    programs: int                # program chunks the step was split into (memory limits)
    instructions: int
    buffer_words: int
    frac: dict[str, int]
    bit_exact: bool
    mismatches: int
    first_mismatch: str | None
    counters_equal: bool
    rtl_error: int
    model_error: int
    within_bound: bool
    max_error: float
    max_bound: float
    worst_ratio: float           # max of error / bound over the checked elements
    checked_elements: int
    golden_max_error: float | None  # model vs the stored float32 golden tensor (complete layers)
    rtl_cycles: int
    model_cycles: int
    schedule_cycles: int         # section 10 prediction (sparsetrain.arch.schedule)
    contract_cycles: int         # the model's own section 10 figure (golden.bitexact.core_model cycles_contract)
    dense_cycles: int            # dense baseline of the same layer step
    density: float               # non-zeros written / elements
    wall_s: dict[str, float] = field(default_factory=dict)
    run_cycles_per_s: float = 0.0  # the free-running core alone (core_driver's run time, no loads)
    threshold: dict[str, Any] = field(default_factory=dict)
    # Campfire weight sparsity: row ops / GTW units of zero or pruned kernel rows the compiler left
    # out, and the section 10 cycles that saves against the same step with every row
    skipped_ops: int = 0
    skipped_units: int = 0
    weight_saved_cycles: int = 0
    # useful PE-cycles (architecture 12.7: a non-zero operand consumed that yields a product), counted
    # on the operand rows of the programs the RTL ran (golden.bitexact.utilisation); pes = G x 3
    pe_useful_cycles: int = 0
    pes: int = 0
    pe_busy_cycles: int = 0      # PE-cycles in operations (the model's units), for the utilisation
    # GTA with a bias: the bias gradients read back from the core (check.functions.bias_check)
    db: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (self.bit_exact and self.counters_equal and self.within_bound and not self.rtl_error
                and self.threshold.get("ok", True) and self.db.get("ok", True))

    @property
    def speedup(self) -> float:
        return self.dense_cycles / self.rtl_cycles if self.rtl_cycles else 0.0

    @property
    def busy_utilisation(self) -> float:
        """Busy PE-cycles over PEs x RTL cycles."""
        return self.pe_busy_cycles / (self.pes * self.rtl_cycles) if self.pes and self.rtl_cycles else 0.0

    @property
    def useful_utilisation(self) -> float:
        """Useful PE-cycles over PEs x RTL cycles (architecture 12.7)."""
        return self.pe_useful_cycles / (self.pes * self.rtl_cycles) if self.pes and self.rtl_cycles else 0.0

    @property
    def sim_rate(self) -> float:
        """Simulated cycles per wall second of the RTL run (load, run and read back)."""
        t = self.wall_s.get("rtl", 0.0)
        return self.rtl_cycles / t if t else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(ok=self.ok, speedup=self.speedup, sim_cycles_per_s=self.sim_rate,
                 busy_utilisation=self.busy_utilisation, useful_utilisation=self.useful_utilisation)
        return d

    def text(self) -> str:
        verdict = "OK" if self.ok else "FAIL"
        lines = [
            f"{self.layer} {self.step} on {self.sim}: {verdict}",
            f"  program: {self.samples} of {self.batch} samples, {self.units} units, {self.ops} ops, "
            f"{self.instructions} instructions in {self.programs} program(s), up to {self.buffer_words} buffer words",
            "  RTL vs bit-accurate model: " + ("bit-exact" if self.bit_exact else "not compared" if self.mismatches < 0
                                                else f"{self.mismatches} elements differ; first {self.first_mismatch}")
            + ("; per-step counters or PPU status differ" if not self.counters_equal else "")
            + (f"; RTL error code {self.rtl_error}" + (" (watchdog)" if self.rtl_error == TIMEOUT_CODE else "")
               if self.rtl_error else ""),
            f"  model vs float64 golden: max error {self.max_error:.3g}, bound {self.max_bound:.3g}, worst "
            f"error/bound {self.worst_ratio:.3f} over {self.checked_elements} elements: "
            + ("within the bound" if self.within_bound else "OUTSIDE the bound"),
        ]
        if self.golden_max_error is not None:
            lines.append(f"  model vs stored float32 golden tensor: max error {self.golden_max_error:.3g}")
        lines.append(f"  cycles: RTL {self.rtl_cycles}, model {self.model_cycles}, schedule (section 10) "
                     f"{self.schedule_cycles}, dense baseline {self.dense_cycles} (speedup {self.speedup:.2f}x)")
        lines.append(f"  PE utilisation over {self.pes} PEs x RTL cycles: busy {self.busy_utilisation:.3f}, useful "
                     f"{self.useful_utilisation:.3f} ({self.pe_useful_cycles} PE-cycles consuming a non-zero operand "
                     f"that yields a product)")
        lines.append(f"  output density {self.density:.3f}; simulation: {self.run_cycles_per_s:,.0f} cycles/s free-running, "
                     f"{self.sim_rate:,.0f} cycles/s with loading and start-up (RTL {self.wall_s.get('rtl', 0):.1f} s, "
                     f"model {self.wall_s.get('model', 0):.1f} s)")
        if self.skipped_ops or self.skipped_units:
            what = (f"{self.skipped_units} GTW units ({self.skipped_ops} row ops) of pruned kernel rows"
                    if self.skipped_units else f"{self.skipped_ops} row ops of all-zero kernel rows")
            lines.append(f"  weight sparsity: {what} skipped, saving {self.weight_saved_cycles} cycles (section 10 "
                         f"schedule of the whole step with and without them)")
        if self.threshold:
            lines.append("  " + threshold_text(self.threshold))
        if self.db:
            lines.append("  " + db_text(self.db))
        return "\n".join(lines)


def threshold_text(th: dict[str, Any]) -> str:
    """One line on the FIFO and the batch threshold (check.functions.threshold_check)."""
    if "fifo" not in th:
        return f"threshold: {th.get('note', 'not compared')}"
    s = (f"threshold FIFO (every group {'the same' if th['groups_equal'] else 'DIFFERENT'}): {th['fifo']}; "
         f"restored entries {'within' if th['restored_ok'] else 'OUTSIDE'} 1/2 LSB of the recorded FIFO "
         f"(max {th['restored_max_error_lsb']:.3f} LSB)")
    if th.get("end_batch"):
        s += (f"; END_BATCH tau_batch {th['tau_batch']} LSB = {th['tau_hw']:.4g} vs float DBTD of the same "
              f"gradient {th['tau_batch_float']:.4g}: error {th['error_lsb']:.2f} LSB, bound {th['bound_lsb']:.2f} "
              f"({'within' if th['within'] else 'OUTSIDE'}; C_m {th['c_m']}, C_shift {th['c_shift']}, n {th['n']})")
        if "recorded_tau_batch" in th:
            s += (f"; training's recorded tau_batch {th['recorded_tau_batch']:.4g} (unmasked dI): ratio "
                  f"{th['ratio_to_recorded']:.3f}")
    return s + (": OK" if th.get("ok") else ": FAIL")


def db_text(db: dict[str, Any]) -> str:
    """One line on the bias gradients (check.functions.bias_check)."""
    if "bit_exact" not in db:
        return f"bias gradient db: {db.get('note', 'not compared')}"
    s = (f"bias gradient db ({db['channels']} channels, {db['units']} units in {db['programs']} program(s), "
         f"RTL {db['rtl_cycles']} cycles, model {db['model_cycles']}): "
         + ("bit-exact" if db["bit_exact"] else "RTL and model DIFFER")
         + f"; vs float64 sum of dO: max error {db['max_error']:.3g}, bound {db['bound']:.3g} "
         + ("within" if db["within"] else "OUTSIDE"))
    if "torch_max_error" in db:
        s += (f"; vs torch's db: max error {db['torch_max_error']:.3g}, bound {db['torch_bound']:.3g} "
              + ("within" if db["torch_within"] else "OUTSIDE"))
    return s + (": OK" if db["ok"] else ": FAIL")


def write_report(reports: list[CheckReport], path: str | Path) -> Path:
    from ..outdir import atomic_write_text
    return atomic_write_text(path, json.dumps([r.as_dict() for r in reports], indent=1, default=float) + "\n")
