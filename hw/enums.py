"""The contract's enumerations as Amaranth shaped enums (``amaranth.lib.enum``).

Names and values come from the one definition of each enumeration (the instruction set and
the PPU command set); the widths come from the instruction-set table ``FIELDS`` (the bits an
instruction word gives the field), so a layout field of one of these shapes is exactly as wide
as the instruction field it is copied from, and ``m.Case(PpuOp.START)`` needs no cast.

They are ``amaranth.lib.enum.IntEnum`` classes: a field of such a shape reads as a plain
unsigned value (comparable with the contract's members and with integers), and its members are
``int`` for Python code.
"""
from __future__ import annotations

import enum as py_enum
import types

from amaranth.hdl import unsigned
from amaranth.lib import enum

from ..arch.isa import ERR_W, OPCODE_W, ErrorCode, Opcode, field_position
from ..arch.ppu import Op
from ..arch.timing import Mode as RowMode


def shaped(source: type[py_enum.IntEnum], width: int) -> type[enum.IntEnum]:
    """``source`` as an ``amaranth.lib.enum.IntEnum`` of shape ``unsigned(width)`` (the same names
    and values; returned as is when it already is a shaped Amaranth enum of that width)."""
    if not (isinstance(source, type) and issubclass(source, py_enum.IntEnum)):
        raise TypeError(f"source = {source!r} is not an IntEnum class; allowed: an enum.IntEnum subclass")
    if not isinstance(width, int) or isinstance(width, bool):
        raise TypeError(f"width = {width!r} is not an integer; allowed: an integer 1 .. 64")
    top = max(int(m) for m in source)
    if not max(1, top.bit_length()) <= width <= 64 or min(int(m) for m in source) < 0:
        raise ValueError(f"width = {width} is out of range for {source.__name__} (values 0 .. {top}); "
                         f"allowed: {max(1, top.bit_length())} .. 64")
    if isinstance(source, enum.EnumType) and hasattr(source, "_amaranth_shape_"):
        if source.as_shape() != unsigned(width):
            raise ValueError(f"{source.__name__} has shape {source.as_shape()!r}; allowed: unsigned({width})")
        return source
    members = {m.name: int(m) for m in source}
    shaped_enum = types.new_class(source.__name__, (enum.IntEnum,), {"shape": unsigned(width)},
                                  lambda ns: ns.update(members))
    shaped_enum.__doc__ = f"{source.__name__} ({source.__module__}) as an Amaranth shape of {width} bits."
    return shaped_enum


def field_width(opcode: Opcode, name: str) -> int:
    """Bits of field ``name`` of an ``opcode`` instruction word (the instruction-set table)."""
    return field_position(opcode, name)[1]


Mode = shaped(RowMode, field_width(Opcode.OP, "mode"))          # row-op mode: OP word, PE cfg
PpuOp = shaped(Op, field_width(Opcode.PPU, "op"))               # PPU command
OpcodeShape = shaped(Opcode, OPCODE_W)                          # instruction opcode
ErrorShape = shaped(ErrorCode, ERR_W)                           # core / group error code
