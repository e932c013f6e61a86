"""The formal checks of ``sparsetrain formal`` / ``make formal`` and how to run them.

Modes: ``prove`` is k-induction (basecase BMC plus the induction step at ``depth``): PASS
means proved for every reachable state. ``bmc`` checks every trace of ``depth`` cycles
from reset. ``cover`` finds a trace for each ``Cover`` within ``depth`` cycles. A BMC
depth is at least twice the longest operation of the small configuration (stated in the
``Check`` and in docs/verification.md).
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .sby import SbyResult, run_sby


@dataclass(frozen=True)
class Check:
    name: str                     # "<block>.<group>"
    block: str
    mode: str                     # prove | bmc | cover
    depth: int
    build: Callable[[], object]   # -> props.Harness
    what: str                     # one line: the properties (docs/verification.md)
    fast: bool = False            # part of the `make test` subset
    config: str = ""              # the small configuration, in words


@dataclass
class CheckResult:
    check: Check
    depth: int
    sby: SbyResult
    extra: dict = field(default_factory=dict)

    @property
    def status(self) -> str:
        return self.sby.status

    def row(self) -> dict:
        c = self.check
        return {"check": c.name, "block": c.block, "mode": c.mode,
                "depth": "proved" if c.mode == "prove" and self.status == "PASS" else self.depth,
                "status": self.status, "seconds": round(self.sby.seconds, 1), "what": c.what,
                "config": c.config, "trace": str(self.sby.trace) if self.sby.trace else None,
                "summary": self.sby.summary}


def _pe(groups: tuple[str, ...]):
    def build():
        from .pe_props import PE_SMALL, pe_harness
        return pe_harness(PE_SMALL, groups)
    return build


def _ppu(groups: tuple[str, ...]):
    def build():
        from .ppu_props import PPU_SMALL, ppu_harness
        return ppu_harness(PPU_SMALL, groups)
    return build


def _checks() -> list[Check]:
    from .pe_props import PE_SMALL, longest_op
    from .ppu_props import PPU_SMALL, longest_command
    pe_d = 2 * longest_op(PE_SMALL)
    ppu_d = 2 * longest_command(PPU_SMALL)
    pe_cfg = f"DW={PE_SMALL.dw} K_MAX={PE_SMALL.k_max} W_MAX={PE_SMALL.w_max} ACC_W={PE_SMALL.acc_w}"
    c = PPU_SMALL
    ppu_cfg = (f"DW={c.dw} K_MAX={c.k_max} W_MAX={c.w_max} ACC_W={c.acc_w} N_F={c.n_f} N_SLOTS={c.n_slots} "
               f"R_W={c.r_w} SUM_W={c.sum_w} G_W={c.g_w} CNT_W={c.cnt_w}")
    checks = [
        Check("pe.stream", "pe", "prove", 3, _pe(("stream",)),
              "out: valid held with a stable payload until ready (inputs obey the same rule)", True, pe_cfg),
        Check("pe.contract", "pe", "bmc", pe_d, _pe(("contract",)),
              "one op at a time; ports read only in their phase, never past `last`; one progress "
              "handshake per cycle; progress cycles = section 6 table at the final beat; no stall while "
              "ports keep up; final beat the cycle after the last input; retire beats only with their "
              "entry and never dropped; disjoint increasing columns inside out_len", True, pe_cfg),
        Check("pe.lanes", "pe", "bmc", pe_d, _pe(("lanes",)),
              "lanes >= count are 0; every lane within +-(2**(ACC_W-1)-1) (saturation, no wrap)", False, pe_cfg),
        Check("pe.refusal", "pe", "bmc", pe_d, _pe(("refusal",)),
              "out-of-range cfg: no port read, next cycle one beat base=0 count=0 last; cfg_error = "
              "last accepted cfg was out of range", True, pe_cfg),
        Check("pe.cover", "pe", "cover", pe_d, _pe(("cover",)),
              "reachable: SRC, MSRC (with retire beats), OSRC ops, a refused op, a back-pressured retire "
              "beat, back-to-back ops", True, pe_cfg),
        Check("ppu.stream", "ppu", "prove", 3, _ppu(("stream",)),
              "out: valid held with a stable payload until ready (inputs obey the same rule)", True, ppu_cfg),
        Check("ppu.acc", "ppu", "bmc", ppu_d, _ppu(("acc",)),
              "ACCUM: acc[x] = sat(acc[x] + contributions) exactly; START loads bias; zero after FINISH; "
              "|acc| <= 2**(ACC_W-1)-1; beats taken only in ACCUM; sum|g| and counters fall only when cleared",
              False, ppu_cfg),
        Check("ppu.fifo", "ppu", "bmc", ppu_d, _ppu(("fifo",)),
              "tau_pred = rne_shift(sum of entries, log2 N_F); running sum = sum of entries; fifo_full and "
              "fifo_count = N_F pushes since the slot was cleared", False, ppu_cfg),
        Check("ppu.rng", "ppu", "bmc", ppu_d, _ppu(("rng",)),
              "xorshift state never 0; every change is the reference step (only for a value that needs R) "
              "or a SEED load", False, ppu_cfg),
        Check("ppu.prune", "ppu", "bmc", ppu_d, _ppu(("prune",)),
              "pruned value in {0, +-tau, q}; 0 stays 0; no R, no change; compressed row: non-zero values, "
              "increasing offsets below length, the empty-row marker alone", False, ppu_cfg),
        Check("ppu.cover", "ppu", "cover", ppu_d, _ppu(("cover",)),
              "reachable: every command accepted and finished, pruning to 0 and to tau, a full FIFO, "
              "a saturated lane, back-to-back entries", False, ppu_cfg),
    ]
    return checks


class _Lazy(list):
    """The check list, built on first use (so importing this module stays cheap)."""

    def _fill(self) -> None:
        if not super().__len__():
            super().extend(_checks())

    def __iter__(self):
        self._fill()
        return super().__iter__()

    def __len__(self) -> int:
        self._fill()
        return super().__len__()

    def __getitem__(self, i):
        self._fill()
        return super().__getitem__(i)


CHECKS: list[Check] = _Lazy()


def select(blocks: Iterable[str] | None = None, names: Iterable[str] | None = None,
           fast: bool = False) -> list[Check]:
    """Checks of the given blocks / names (None: all); ``fast``: only the make-test subset."""
    known_blocks = sorted({c.block for c in CHECKS})
    blocks = list(blocks or [])
    for b in blocks:
        if b not in known_blocks:
            raise ValueError(f"block = {b!r} has no formal checks; allowed: {', '.join(known_blocks)}")
    names = list(names or [])
    known_names = [c.name for c in CHECKS]
    for n in names:
        if n not in known_names:
            raise ValueError(f"check = {n!r} is unknown; allowed: {', '.join(known_names)}")
    return [c for c in CHECKS if (not blocks or c.block in blocks) and (not names or c.name in names)
            and (not fast or c.fast)]


def run_check(check: Check, workdir: Path, depth: int | None = None, timeout_s: float = 3600) -> CheckResult:
    if depth is not None and depth < 1:
        raise ValueError(f"depth = {depth} is out of range; allowed: >= 1")
    d = depth or check.depth
    h = check.build()
    res = run_sby(h.m, h.ports, Path(workdir) / check.name, check.mode, d, timeout_s=timeout_s)
    return CheckResult(check, d, res)


def run_checks(checks: list[Check], out: Path, depth: int | None = None,
               progress: Callable[[CheckResult], None] | None = None) -> list[CheckResult]:
    """Run ``checks`` under ``out`` (one folder each), write ``results.json`` and ``results.md``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    t0 = time.monotonic()
    for c in checks:
        r = run_check(c, out, depth)
        results.append(r)
        if progress:
            progress(r)
    (out / "results.json").write_text(json.dumps(
        {"seconds": round(time.monotonic() - t0, 1), "results": [r.row() for r in results]}, indent=2) + "\n")
    (out / "results.md").write_text(results_table(results))
    return results


def results_table(results: list[CheckResult]) -> str:
    lines = ["| check | block | engine | depth | result | time (s) | properties |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        row = r.row()
        engine = {"prove": "smtbmc k-induction", "bmc": "smtbmc BMC", "cover": "smtbmc cover"}[r.check.mode]
        lines.append(f"| {row['check']} | {row['block']} | {engine} | {row['depth']} | {row['status']} | "
                     f"{row['seconds']} | {row['what']} |")
    return "\n".join(lines) + "\n"
