"""Building blocks of the formal harnesses: past values, the stream rule, internal probes.

A harness is a plain ``Module`` holding the block under test; its free inputs are the
block's input ports (listed in ``Harness.ports``), reset is assumed low (every register
starts at its ``init`` value in step 0, as after reset). Amaranth 0.5 has no ``Past``, so
past values are registers made here, qualified by ``past_valid`` (low in step 0).
"""
from __future__ import annotations

from amaranth.hdl import Assert, Assume, Fragment, Module, ResetSignal, Signal
from amaranth.lib import wiring


class Harness:
    def __init__(self) -> None:
        self.m = m = Module()
        self.ports: list = []
        self.past_valid = Signal(name="past_valid")
        m.d.sync += self.past_valid.eq(1)
        m.d.comb += Assume(~ResetSignal())

    def add_block(self, name: str, dut: wiring.Component) -> Fragment:
        """Add ``dut`` (unchanged) as a submodule; its input ports become free inputs of the
        check. Returns its elaborated fragment."""
        frag = Fragment.get(dut, platform=None)
        self.m.submodules[name] = frag
        # only the inputs become ports: outputs that no property reads are then removed
        # by Yosys (cone of influence), which keeps the control checks small
        self.ports += [value.as_value() if hasattr(value, "as_value") else value
                       for _, member, value in dut.signature.flatten(dut) if member.flow == wiring.In]
        return frag

    def add_dut(self, name: str, dut: wiring.Component) -> dict[str, list[Signal]]:
        """``add_block``, returning the signals assigned inside the block by name (for
        properties on internal state)."""
        return internal_signals(self.add_block(name, dut))

    def past(self, value, name: str) -> Signal:
        """``value`` one cycle ago (0 in step 0)."""
        v = value.as_value() if hasattr(value, "as_value") else value
        reg = Signal(len(v), name=f"past_{name}")
        self.m.d.sync += reg.eq(v)
        return reg

    def stream_rule(self, s, name: str, kind=Assert) -> None:
        """Once ``valid`` is high it stays high, with the same payload, until ``ready``.

        ``kind=Assume`` for an input (the environment obeys the rule), ``Assert`` for an output."""
        pv = self.past(s.valid, f"{name}_valid")
        pr = self.past(s.ready, f"{name}_ready")
        pp = self.past(s.payload, f"{name}_payload")
        with self.m.If(self.past_valid & pv & ~pr):
            self.m.d.comb += kind(s.valid & (s.payload.as_value() == pp))


def check_groups(groups: tuple[str, ...], allowed: tuple[str, ...]) -> None:
    """Refuse property groups a harness does not have, naming them and the allowed ones."""
    unknown = set(groups) - set(allowed)
    if unknown:
        raise ValueError(f"groups = {sorted(unknown)} unknown; allowed: {', '.join(allowed)}")


def submodules(frag: Fragment) -> dict[str, object]:
    """The elaboratables of ``frag``'s direct subfragments, by submodule name."""
    return {name: sub.origins[0] for sub, name, _ in frag.subfragments}


def internal_signals(frag: Fragment) -> dict[str, list[Signal]]:
    """Every signal assigned in ``frag`` and its subfragments, by name."""
    found: dict[str, list[Signal]] = {}

    def walk(f: Fragment) -> None:
        for stmts in f.statements.values():
            for st in stmts:
                for s in st._lhs_signals():
                    lst = found.setdefault(s.name, [])
                    if not any(s is x for x in lst):
                        lst.append(s)
        for sub, _name, _loc in f.subfragments:
            walk(sub)

    walk(frag)
    return found


def probe(signals: dict[str, list[Signal]], name: str) -> Signal:
    """The one internal signal called ``name`` (an error names it when absent or ambiguous)."""
    got = signals.get(name, [])
    if len(got) != 1:
        raise LookupError(f"internal signal {name!r}: found {len(got)}, need exactly 1 (RTL changed?)")
    return got[0]


def popcount(bits: list):
    total = 0
    for b in bits:
        total = total + b
    return total
