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


def _pe_default(groups: tuple[str, ...]):
    def build():
        from ..arch.pe import HwParams
        from .pe_props import pe_harness
        return pe_harness(HwParams(), groups)
    return build


def _pe_prefetch(groups: tuple[str, ...]):
    def build():
        from .pe_props import PE_SMALL, pe_prefetch_harness
        return pe_prefetch_harness(PE_SMALL, groups)
    return build


def _ppu(groups: tuple[str, ...]):
    def build():
        from .ppu_props import PPU_SMALL, ppu_harness
        return ppu_harness(PPU_SMALL, groups)
    return build


def _group(groups: tuple[str, ...]):
    def build():
        from .group_props import GROUP_SMALL, group_harness
        return group_harness(GROUP_SMALL, groups)
    return build


def _core(groups: tuple[str, ...]):
    def build():
        from .core_props import CORE_SMALL, core_harness
        return core_harness(CORE_SMALL, groups)
    return build


def _datapath(p) -> str:
    return f"DW={p.dw} K_MAX={p.k_max} W_MAX={p.w_max} ACC_W={p.acc_w}"


def _checks() -> list[Check]:
    from .core_props import CORE_SMALL
    from .group_props import GROUP_SMALL
    from .pe_props import PE_SMALL, longest_op
    from .ppu_props import PPU_SMALL, longest_command
    # BMC / cover depths: twice the longest stall-free operation of the small configuration
    pe_d = 2 * longest_op(PE_SMALL)
    ppu_d = 2 * longest_command(PPU_SMALL)
    grp_d = 2 * longest_op(GROUP_SMALL)
    pe_cfg = _datapath(PE_SMALL)
    from ..arch.pe import HwParams
    pe_default = _datapath(HwParams())
    c = PPU_SMALL
    ppu_cfg = (f"{_datapath(c)} N_F={c.n_f} N_SLOTS={c.n_slots} R_W={c.r_w} SUM_W={c.sum_w} "
               f"G_W={c.g_w} CNT_W={c.cnt_w}")
    g = GROUP_SMALL
    grp_cfg = f"{_datapath(g)} BUF_DEPTH={g.buf_depth} MASK_DEPTH={g.mask_depth} N_SLOTS={g.n_slots} N_F={g.n_f}"
    k = CORE_SMALL
    core_cfg = (f"{_datapath(k)} G={k.groups} BUF_DEPTH={k.buf_depth} MASK_DEPTH={k.mask_depth} "
                f"IMEM_DEPTH={k.imem_depth} DIR_DEPTH={k.dir_depth} N_SLOTS={k.n_slots} N_F={k.n_f}")
    stream = "valid held with a stable payload until ready (inputs obey the same rule)"
    return [
        Check("pe.stream", "pe", "prove", 2, _pe(("stream",)), f"out: {stream}", True, pe_cfg),
        Check("pe.contract", "pe", "prove", 2, _pe(("contract",)),
              "one op at a time (cfg.ready exactly while idle); ports read only in their phase, never past "
              "`last`; one progress handshake per cycle; progress cycles = section 6 table (K, N1, N2) at the "
              "final beat; no stall while every port keeps up; final beat in the cycle after the last input; "
              "retire beats only with their entry, never dropped or duplicated; disjoint increasing columns "
              "inside out_len, count <= K", True, pe_cfg),
        Check("pe.lanes", "pe", "prove", 2, _pe(("lanes",)),
              "lanes >= count are 0; Reg-2 and every lane within +-(2**(ACC_W-1)-1) (saturation, no wrap)",
              True, pe_cfg),
        Check("pe.refusal", "pe", "prove", 2, _pe(("refusal",)),
              "out-of-range cfg: no port read, next cycle one beat base=0 count=0 last; cfg_error = "
              "the last accepted cfg was out of range", True, pe_cfg),
        Check("pe.cover", "pe", "cover", pe_d, _pe(("cover",)),
              "reachable: SRC and MSRC ops with retire beats, an OSRC op, a refused op, a back-pressured "
              "retire beat, back-to-back ops", True, pe_cfg),
        # the control proofs close at the default (paper-sized) PE as well
        Check("pe.stream@default", "pe", "prove", 2, _pe_default(("stream",)), f"out: {stream}", False,
              pe_default),
        Check("pe.contract@default", "pe", "prove", 2, _pe_default(("contract",)),
              "as pe.contract", False, pe_default),
        Check("pe.refusal@default", "pe", "prove", 2, _pe_default(("refusal",)),
              "as pe.refusal", False, pe_default),
        # the second-generation PE with prefetch (docs/architecture.md 6.1): bounded checks, up
        # to three ops in flight (reached within the depth: cover pe.prefetch.cover)
        Check("pe.prefetch.queue", "pe", "bmc", 14, _pe_prefetch(("queue",)),
              "PREFETCH=1: never more than three ops in flight (A, S, Q), a fourth cfg is not taken; no beat "
              "without an op in flight, so one final beat per configured op; no stall while every port keeps up",
              True, pe_cfg + " PREFETCH=1"),
        Check("pe.prefetch.ports", "pe", "bmc", 8, _pe_prefetch(("ports",)),
              "PREFETCH=1: Port-1 only for the active op once its weights and mask are in, never past `last`; "
              "Port-2 weights only for an op that needs them (K each), never while an OSRC op has inputs left; "
              "Port-3 once per MSRC op, with its first weight", False, pe_cfg + " PREFETCH=1"),
        Check("pe.prefetch.beats", "pe", "bmc", 8, _pe_prefetch(("beats",)),
              "PREFETCH=1: an op's final beat after all its inputs, in the cycle after the last; retire beats only "
              "with their entry, never dropped; disjoint increasing columns inside out_len, count <= K; refused "
              "ops read nothing and end with count 0; cfg_error at the final beat = that op was refused",
              False, pe_cfg + " PREFETCH=1"),
        Check("pe.prefetch.stream", "pe", "bmc", 8, _pe_prefetch(("stream",)), f"PREFETCH=1 out: {stream}",
              False, pe_cfg + " PREFETCH=1"),
        Check("pe.prefetch.cover", "pe", "cover", 14, _pe_prefetch(("cover",)),
              "PREFETCH=1 reachable: three ops in flight, an SRC op computing while the next op's weight loads, "
              "final beats of two ops in consecutive cycles, an OSRC op finishing with three ops in flight",
              False, pe_cfg + " PREFETCH=1"),
        Check("ppu.stream", "ppu", "prove", 2, _ppu(("stream",)), f"out: {stream}", True, ppu_cfg),
        Check("ppu.acc", "ppu", "prove", 2, _ppu(("acc",)),
              "ACCUM: acc[x] = sat(acc[x] + the cycle's contributions) exactly (no wrap); START loads the "
              "bias; zero after FINISH; |acc| <= 2**(ACC_W-1)-1", False, ppu_cfg),
        Check("ppu.sat", "ppu", "prove", 2, _ppu(("sat",)),
              "|acc| <= 2**(ACC_W-1)-1; beats taken only in ACCUM; sum|g|, layer_nnz, layer_elems fall only "
              "when cleared (saturate, never wrap)", True, ppu_cfg),
        Check("ppu.fifo", "ppu", "prove", 2, _ppu(("fifo",)),
              "tau_pred = rne_shift(sum of entries, log2 N_F); running sum = sum of entries; fifo_full and "
              "fifo_count = N_F pushes since the slot was cleared", True, ppu_cfg),
        Check("ppu.rng", "ppu", "prove", 2, _ppu(("rng",)),
              "xorshift state never 0; every change is the reference step (only for a value that needs R) "
              "or a SEED load", True, ppu_cfg),
        Check("ppu.prune", "ppu", "prove", 2, _ppu(("prune",)),
              "pruned value in {0, +-tau, q} (tau with the sign of q); 0 stays 0; no R drawn, no change",
              True, ppu_cfg),
        Check("ppu.row", "ppu", "bmc", ppu_d, _ppu(("row",)),
              "compressed row: non-zero values at increasing offsets below length, or the empty-row "
              "marker alone", True, ppu_cfg),
        Check("ppu.cover", "ppu", "cover", ppu_d + 6, _ppu(("cover",)),
              "reachable: every command accepted and finished, pruning to 0 and to tau, a full FIFO, "
              "a saturated lane, back-to-back entries", False, ppu_cfg),
        Check("group.issue", "group", "prove", 3, _group(("issue",)),
              "a cfg goes only to a free PE; after an error no op is issued and the group is never free "
              "again", True, grp_cfg),
        Check("group.write", "group", "bmc", grp_d, _group(("write",)),
              "each unit's result is written once: one directory write per unit, entries at consecutive "
              "addresses from out_addr, at most max(1, length), none outside a unit", False, grp_cfg),
        Check("group.stream", "group", "bmc", grp_d, _group(("stream",)),
              "fetch engine -> PE Port-1/2/3, PE -> PPU and PPU out: stream rule, no assumption on them",
              False, grp_cfg),
        Check("group.cover", "group", "cover", grp_d + 8, _group(("cover",)),
              "reachable: a unit with ops writes its row (also with two PEs busy); error codes BAD_OPCODE, "
              "ADDRESS, BAD_OP", True, grp_cfg),
        Check("core.control", "core", "prove", 2, _core(("control",)),
              "a unit only to a free group, one at a time; PPU commands only to idle groups; an error ends "
              "the run: done and error together, held with the code until start", True, core_cfg),
        Check("core.cover", "core", "cover", 12, _core(("cover",)),
              "reachable: each error code (BAD_OPCODE, ADDRESS, BAD_OP, BAD_UNIT) ends a run; a run ends "
              "normally at END", False, core_cfg),
    ]


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
