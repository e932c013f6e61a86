"""Payload layouts of docs/architecture.md section 4: the one definition used by every block."""
from __future__ import annotations

from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from ..arch.isa import FIELDS, OPCODE_W, Opcode
from ..arch.pe import HwParams, bits_for


def entry_layout(p: HwParams) -> data.StructLayout:
    """One element of the sparse row format (section 3)."""
    return data.StructLayout({
        "value": signed(p.dw),
        "offset": unsigned(p.off_w),
        "last": unsigned(1),
    })


def pe_cfg_layout(p: HwParams) -> data.StructLayout:
    return data.StructLayout({
        "mode": unsigned(2),
        "k": unsigned(p.k_w),
        "stride2": unsigned(1),
        "pad": unsigned(p.k_w),
        "in_len": unsigned(p.off_w),
        "out_len": unsigned(p.off_w),
    })


def mask_layout(p: HwParams) -> data.StructLayout:
    return data.StructLayout({"bits": unsigned(p.w_max)})


def beat_layout(p: HwParams) -> data.StructLayout:
    """K_MAX-lane result beat of a PE (section 4)."""
    return data.StructLayout({
        "base": unsigned(p.off_w),
        "count": unsigned(p.k_w),
        "lanes": data.ArrayLayout(signed(p.acc_w), p.k_max),
        "last": unsigned(1),
    })


def instr_layout(opcode: Opcode | int) -> data.StructLayout:
    """One instruction kind (section 11.3, opcode field included), generated from ``arch.isa.FIELDS``."""
    members = {"opcode": unsigned(OPCODE_W)}
    for name, width, is_signed in FIELDS[Opcode(opcode)]:
        members[name] = signed(width) if is_signed else unsigned(width)
    return data.StructLayout(members)


def entry_pair_layout(p: HwParams) -> data.StructLayout:
    """Port-1 of a PE with MSRC look-ahead (LOOKAHEAD = 2, section 6.1): the first two pending
    entries of the row; ``second`` is meaningful only when ``has_second`` is set."""
    return data.StructLayout({
        "first": entry_layout(p),
        "second": entry_layout(p),
        "has_second": unsigned(1),
    })
