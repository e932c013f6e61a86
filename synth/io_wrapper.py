"""A board top that fits any block's ports onto two pins, for place-and-route on a small FPGA.

A block such as the PE has hundreds of port bits (a PE output beat alone is K_MAX x ACC_W
bits); an iCE40UP5K-SG48 has 39 I/O pins. The wrapper keeps every bit of the block
observable and controllable, so synthesis can remove nothing:

* every input bit of the block is driven by one stage of a shift chain fed from one pin
  (so block inputs come straight from flip-flops, as they would from a neighbouring block);
* every output bit feeds a pipelined XOR-reduction tree (4 bits per LUT4, one register per
  tree node) whose root drives one pin.

Its cost is exact and reported with the results so it can be subtracted: one flip-flop per
input bit, and per tree node one flip-flop and (about) one LUT4. Output paths gain one LUT
level before their first register, which can lower Fmax slightly; docs/area.md says so.
"""
from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Cat, Elaboratable, Module, Signal, Value
from amaranth.lib import io, wiring
from amaranth.lib.wiring import In

TREE_FANIN = 4  # one iCE40 LUT4 per tree node


@dataclass(frozen=True)
class PortBits:
    inputs: tuple[tuple[str, Value], ...]
    outputs: tuple[tuple[str, Value], ...]

    @property
    def input_width(self) -> int:
        return sum(len(v) for _, v in self.inputs)

    @property
    def output_width(self) -> int:
        return sum(len(v) for _, v in self.outputs)


def port_bits(component: wiring.Component) -> PortBits:
    """Every port of a component as (dotted name, Value), split by direction."""
    ins, outs = [], []
    for path, member, value in component.signature.flatten(component):
        name = ".".join(str(p) for p in path)
        (ins if member.flow == In else outs).append((name, Value.cast(value)))
    return PortBits(tuple(ins), tuple(outs))


def xor_tree_nodes(width: int, fanin: int = TREE_FANIN) -> list[int]:
    """Number of nodes on each level of the reduction tree over ``width`` bits."""
    levels = []
    while width > 1:
        width = -(-width // fanin)
        levels.append(width)
    return levels


class SerialIoWrapper(Elaboratable):
    """Top module for a board: ``block`` in the sync domain, one serial-in and one out pin.

    ``pins`` names a board resource with an input subsignal ``rx`` and an output ``tx``
    (a UART on most amaranth-boards platforms); used only as plain pins here.
    """

    def __init__(self, block: wiring.Component, pins: str = "uart") -> None:
        self.block = block
        self.pins = pins
        self.ports = port_bits(block)
        if self.ports.input_width == 0 or self.ports.output_width == 0:
            raise ValueError(f"block = {type(block).__name__} has {self.ports.input_width} input and "
                             f"{self.ports.output_width} output bits; allowed: at least one of each")

    @property
    def flip_flops(self) -> int:
        """Flip-flops the wrapper itself adds (shift chain plus tree registers)."""
        return self.ports.input_width + sum(xor_tree_nodes(self.ports.output_width)) + \
            (1 if self.ports.output_width == 1 else 0)

    @property
    def luts(self) -> int:
        """LUT4s of the XOR tree (one per node); the shift chain needs none."""
        return sum(xor_tree_nodes(self.ports.output_width))

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.block = self.block
        pins = platform.request(self.pins, 0, dir="-")
        m.submodules.serial_in = serial_in = io.Buffer("i", pins.rx)
        m.submodules.serial_out = serial_out = io.Buffer("o", pins.tx)

        chain = Signal(self.ports.input_width)
        m.d.sync += chain.eq(Cat(serial_in.i, chain[:-1]))
        offset = 0
        for _, value in self.ports.inputs:
            m.d.comb += value.eq(chain[offset:offset + len(value)])
            offset += len(value)

        level = Cat(*(v for _, v in self.ports.outputs))
        if len(level) == 1:  # still register it, so the output pin is driven from a flip-flop
            reg = Signal()
            m.d.sync += reg.eq(level)
            level = reg
        while len(level) > 1:
            nodes = Signal(-(-len(level) // TREE_FANIN))
            for i in range(len(nodes)):
                m.d.sync += nodes[i].eq(level[i * TREE_FANIN:(i + 1) * TREE_FANIN].xor())
            level = nodes
        m.d.comb += serial_out.o.eq(level)
        return m
