"""Mutation checks: a known bug injected into a *copy* of a block must make a proof fail.

The copy is the block's source file with one exact text replaced, executed as a private
module next to the original (same package, so its relative imports resolve); the
repository's RTL is never touched. A mutation is caught when SBY reports FAIL and names
a counterexample trace (VCD) that exists.
"""
from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from .sby import SbyResult, run_sby


@dataclass(frozen=True)
class Mutation:
    name: str
    module: str      # module of sparsetrain.hw holding the block
    cls: str         # the block's class in that module
    original: str    # text that must occur exactly once
    mutant: str      # its replacement: the bug
    check: str       # the property group that must fail
    mode: str
    depth: int
    why: str
    prefetch: bool = False  # check the PE elaborated with prefetch (pe_prefetch_harness)


MUTATIONS = (
    Mutation("pe_port1_ignores_ready", "pe", "PE",
             "self.port1.ready.eq(~retire | self.out.ready)", "self.port1.ready.eq(1)",
             "contract", "bmc", 8,
             "Port-1 takes an entry whose retire beat is not accepted: the beat is lost"),
    Mutation("pe_final_beat_dropped", "pe", "PE",
             "            with m.State(\"FINAL\"):\n                m.d.comb += in_final.eq(1)\n"
             "                with m.If(self.out.ready):\n                    m.next = \"IDLE\"",
             "            with m.State(\"FINAL\"):\n                m.d.comb += in_final.eq(1)\n"
             "                with m.If(1):\n                    m.next = \"IDLE\"",
             "stream", "prove", 3,
             "the final beat is withdrawn after one cycle whether or not it was accepted"),
    Mutation("pe_prefetch_queue_overrun", "pe", "PE",
             "self.cfg.ready.eq(~q_valid | to_s),", "self.cfg.ready.eq(1),",
             "queue", "bmc", 8,
             "with prefetch, cfg is taken while the queue is full: the queued op is overwritten (lost)",
             prefetch=True),
    Mutation("ppu_no_saturation", "ppu", "PPU",
             "m.d.sync += acc[col].eq(_sat_signed(total, c.acc_w))", "m.d.sync += acc[col].eq(total)",
             "sat", "bmc", 6,
             "ACCUM drops the saturation: an accumulator lane wraps"),
)


def mutant_module(mut: Mutation, apply: bool = True) -> ModuleType:
    """Import a copy of ``sparsetrain.hw.<module>`` with the mutation applied (``apply=False``:
    the unchanged copy, the control that shows the copy itself passes the same check)."""
    from .. import hw
    src_path = Path(hw.__path__[0]) / f"{mut.module}.py"
    text = src_path.read_text()
    n = text.count(mut.original)
    if n != 1:
        raise LookupError(f"mutation {mut.name}: the text to replace occurs {n} times in {src_path} "
                          f"(need exactly 1; RTL changed?)")
    name = f"{hw.__name__}._mutant_{mut.module}_{mut.name}"
    spec = importlib.util.spec_from_loader(name, loader=None, origin=f"{src_path} (mutant {mut.name})")
    mod = importlib.util.module_from_spec(spec)
    mod.__package__ = hw.__name__
    sys.modules[name] = mod
    try:
        code = text.replace(mut.original, mut.mutant) if apply else text
        exec(compile(code, f"<mutant {mut.name} of {src_path}>", "exec"),
             mod.__dict__)
    finally:
        sys.modules.pop(name, None)
    return mod


def mutant_harness(mut: Mutation, apply: bool = True):
    cls = getattr(mutant_module(mut, apply), mut.cls)
    if mut.module == "pe" and mut.prefetch:
        from .pe_props import PE_SMALL, pe_prefetch_harness
        return pe_prefetch_harness(PE_SMALL, (mut.check,), pe_cls=cls)
    if mut.module == "pe":
        from .pe_props import PE_SMALL, pe_harness
        return pe_harness(PE_SMALL, (mut.check,), pe_cls=cls)
    if mut.module == "ppu":
        from .ppu_props import PPU_SMALL, ppu_harness
        return ppu_harness(PPU_SMALL, (mut.check,), ppu_cls=cls)
    raise ValueError(f"mutation {mut.name}: module = {mut.module!r} has no harness; allowed: pe, ppu")


def run_mutation(mut: Mutation, workdir: Path, apply: bool = True) -> SbyResult:
    """Run the mutation's check on the mutated copy (``apply=False``: on the unchanged copy)."""
    h = mutant_harness(mut, apply)
    sub = mut.name if apply else f"{mut.name}_control"
    return run_sby(h.m, h.ports, Path(workdir) / sub, mut.mode, mut.depth)
