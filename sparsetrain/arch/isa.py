"""Instruction set, memory word formats and parameters of the core (docs/architecture.md s.11).

The one definition of the instruction fields: ``FIELDS`` (pure Python, used by the compiler,
``golden.bitexact.core_model`` and the testbench); ``hw.layouts.instr_layout`` generates the
``amaranth.lib.data`` view of the same bits for the RTL. No amaranth here, so the golden model
and cocotb processes can use it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from amaranth.lib.enum import IntEnum

from .fixedpoint import DatapathParams, check_param
from .microarch import ISSUE_QUEUE, MicroArch
from .ppu import DEFAULT_SEED, N_PE, PPUConfig

INSTR_W = 160
OPCODE_W = 4
ADDR_W = 20       # buffer addresses (BUF_DEPTH <= 2**20)
LEN_W = 13        # row lengths (W_MAX <= 4096)
N_STEPS = 4       # per-step counters
COUNTER_W = 32
ERR_W = 4         # error_code of the group and the core (codes 0 .. 15)
DB_IDX_W = 8      # UNIT.db: bias-gradient bank entry (DB_DEPTH <= 2**DB_IDX_W, section 11.6)


class Opcode(IntEnum, shape=OPCODE_W):
    NOP = 0
    UNIT = 1
    OP = 2
    PPU = 3
    SYNC = 4
    END = 5
    UNITS = 6


class ErrorCode(IntEnum, shape=ERR_W):
    NONE = 0
    BAD_OPCODE = 1
    ADDRESS = 2
    BAD_OP = 3
    BAD_UNIT = 4


# opcode -> ((field, width, signed), ...) from bit OPCODE_W upwards, LSB first
FIELDS: dict[Opcode, tuple[tuple[str, int, bool], ...]] = {
    Opcode.NOP: (),
    Opcode.UNIT: (("n_ops", 16, False), ("dir", 16, False), ("out_addr", ADDR_W, False),
                  ("length", LEN_W, False), ("shift", 6, False), ("relu", 1, False), ("acc_g", 1, False),
                  ("prune", 1, False), ("g_first", 1, False), ("slot", 6, False), ("bias_en", 1, False),
                  ("bias", 64, True), ("db_en", 1, False), ("db", DB_IDX_W, False)),
    Opcode.OP: (("mode", 2, False), ("k", 5, False), ("stride2", 1, False), ("pad", 5, False),
                ("in_len", LEN_W, False), ("out_len", LEN_W, False), ("addr1", ADDR_W, False),
                ("addr2", ADDR_W, False), ("mask_addr", 16, False), ("dir1", 16, False), ("dir2", 16, False)),
    Opcode.PPU: (("group", 8, False), ("all", 1, False), ("op", 3, False), ("slot", 6, False),
                 ("c_m", 16, False), ("c_shift", 6, False), ("value", 32, False)),
    Opcode.SYNC: (("step", 2, False),),
    Opcode.END: (),
    # a unit block (section 11.3): `count` UNIT words, then their OP words unit by unit
    Opcode.UNITS: (("count", 16, False),),
}

# row directory word: (field, lsb, width)
DIR_FIELDS = (("start", 0, ADDR_W), ("entries", 20, LEN_W), ("nnz", 33, LEN_W), ("written", 46, 1))
DIR_W = 47


def encode(opcode: Opcode | int, **fields: int) -> int:
    """One instruction word; unknown field names or values that do not fit raise ValueError."""
    try:
        opcode = Opcode(opcode)
    except ValueError:
        raise ValueError(f"opcode = {opcode!r} is out of range; allowed: {[o.name for o in Opcode]}") from None
    spec = FIELDS[opcode]
    names = {n for n, _, _ in spec}
    for n in fields:
        if n not in names:
            raise ValueError(f"field = {n!r} is unknown for {opcode.name}; allowed: {', '.join(sorted(names)) or 'none'}")
    word, pos = int(opcode), OPCODE_W
    for name, width, is_signed in spec:
        v = int(fields.get(name, 0))
        if is_signed:
            check_param(name, v, -(1 << (width - 1)), (1 << (width - 1)) - 1)
            v &= (1 << width) - 1
        else:
            check_param(name, v, 0, (1 << width) - 1)
        word |= v << pos
        pos += width
    return word


def field_position(opcode: Opcode | int, name: str) -> tuple[int, int]:
    """(lsb, width) of field ``name`` in an ``opcode`` word (for OR-ing fields into an encoded base)."""
    pos = OPCODE_W
    for n, width, _ in FIELDS[Opcode(opcode)]:
        if n == name:
            return pos, width
        pos += width
    raise ValueError(f"field = {name!r} is unknown for {Opcode(opcode).name}")


def decode(word: int) -> tuple[int, dict[str, int]]:
    """(opcode, fields); an unknown opcode returns (opcode, {})."""
    word = int(word)
    op = word & ((1 << OPCODE_W) - 1)
    if op not in FIELDS:
        return op, {}
    out, pos = {}, OPCODE_W
    for name, width, is_signed in FIELDS[Opcode(op)]:
        v = (word >> pos) & ((1 << width) - 1)
        if is_signed and v >> (width - 1):
            v -= 1 << width
        out[name] = v
        pos += width
    return op, out


def dir_encode(start: int, entries: int, nnz: int, written: int = 1) -> int:
    vals = {"start": start, "entries": entries, "nnz": nnz, "written": written}
    return sum((int(vals[n]) & ((1 << w) - 1)) << lsb for n, lsb, w in DIR_FIELDS)


def dir_decode(word: int) -> dict[str, int]:
    return {n: (int(word) >> lsb) & ((1 << w) - 1) for n, lsb, w in DIR_FIELDS}


@dataclass(frozen=True)
class CoreParams(DatapathParams):
    """Elaboration parameters of the core (section 11.1), validated on creation."""

    groups: int = 2
    buf_depth: int = 16384
    mask_depth: int = 1024
    imem_depth: int = 8192
    dir_depth: int = 4096
    n_slots: int = 4
    n_f: int = 4
    r_w: int = 16
    seed: int = DEFAULT_SEED
    # second generation (section 12), elaboration parameters of the group and core; the
    # defaults are the first generation exactly
    prefetch: int = 0      # A: shadow Reg-1 and cfg queue in every PE (0 off, 1 on)
    lookahead: int = 1     # B: MSRC look-ahead, Port-1 entries per cycle (1 off, 2 on)
    pingpong: int = 0      # C: two PPU accumulators (0 off, 1 on)
    skip_empty: int = 0    # D: ops whose sparse operand row is empty are not issued (0 off, 1 on)
    op_scan: int = 4       # D: OP words the group's op reader examines per cycle (1 .. 7)
    osrc_window: int = 1   # E: OSRC merge actions a PE examines per cycle (1 off, 2 on; 12.6)
    unit_rate: int = 1     # F: UNITs of a unit block the controller hands out per cycle (1 .. 8; 12.9)
    db_depth: int = 64          # bias-gradient bank entries per group (section 11.6)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_param("PREFETCH", self.prefetch, 0, 1)
        check_param("LOOKAHEAD", self.lookahead, 1, 2)
        check_param("PINGPONG", self.pingpong, 0, 1)
        check_param("SKIP_EMPTY", self.skip_empty, 0, 1)
        # a block of more kept ops than ISSUE_QUEUE + N_PE never fits the issue queue (12.4)
        check_param("OP_SCAN", self.op_scan, 1, ISSUE_QUEUE + N_PE)
        check_param("OSRC_WINDOW", self.osrc_window, 1, 2)
        check_param("UNIT_RATE", self.unit_rate, 1, 8)
        check_param("G", self.groups, 1, 255)
        check_param("DB_DEPTH", self.db_depth, 1, 1 << DB_IDX_W)
        check_param("BUF_DEPTH", self.buf_depth, 16, 1 << ADDR_W)
        check_param("MASK_DEPTH", self.mask_depth, 1, 1 << 16)
        check_param("IMEM_DEPTH", self.imem_depth, 16, 1 << 20)
        check_param("DIR_DEPTH", self.dir_depth, 1, 1 << 16)
        self.ppu_config()  # validates N_SLOTS, N_F, R_W, SEED

    @property
    def entry_w(self) -> int:
        return self.dw + self.off_w + 1

    def ppu_config(self) -> PPUConfig:
        return PPUConfig(dw=self.dw, k_max=self.k_max, w_max=self.w_max, acc_w=self.acc_w,
                         n_f=self.n_f, n_slots=self.n_slots, r_w=self.r_w, seed=self.seed, pingpong=self.pingpong)

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items()}

    def microarch(self) -> MicroArch:
        """The section 12 switches this core is built with (``arch.microarch.MicroArch``). The
        op reader's rate counts only with SKIP_EMPTY (without it every OP word is an issued op)."""
        return MicroArch(prefetch=bool(self.prefetch), lookahead=self.lookahead, pingpong=bool(self.pingpong),
                         skip_empty=bool(self.skip_empty), op_scan=self.op_scan if self.skip_empty else 0,
                         osrc_window=self.osrc_window, unit_rate=self.unit_rate)


def entry_encode(value: int, offset: int, last: int, p: CoreParams) -> int:
    """One buffer word (section 11.2): value | offset << DW | last << (DW + OFF_W)."""
    return (int(value) & ((1 << p.dw) - 1)) | (int(offset) << p.dw) | (int(last) << (p.dw + p.off_w))


def entry_decode(word: int, p: CoreParams) -> tuple[int, int, int]:
    word = int(word)
    v = word & ((1 << p.dw) - 1)
    if v >> (p.dw - 1):
        v -= 1 << p.dw
    return v, (word >> p.dw) & ((1 << p.off_w) - 1), (word >> (p.dw + p.off_w)) & 1
