"""The RTL's structure in Amaranth 0.5 idioms: checked constructors, the one NAME=VALUE mapping,
shaped enums sized by the instruction-set table, and the group's sub-components (the threshold
FIFOs and the fetch engines) against their reference behaviour in simulation."""
from __future__ import annotations

import dataclasses
import gc
import random

import pytest
from amaranth.hdl import Shape
from amaranth.sim import Simulator

from sparsetrain.arch.isa import FIELDS, OPCODE_W, CoreParams, ErrorCode, Opcode, entry_encode
from sparsetrain.arch.pe import HwParams
from sparsetrain.arch.ppu import Op, PPUConfig
from sparsetrain.arch.timing import Mode as RowMode
from sparsetrain.golden.bitexact.ppu_model import PPUThresholdFIFO
from sparsetrain.hw.blocks import BLOCKS, DATAPATH_PARAMS, BlockSpec, ParamSpec, parse_overrides, to_verilog
from sparsetrain.hw.core import Core, HostSignature
from sparsetrain.hw.enums import ERR_W, ErrorShape, Mode, OpcodeShape, PpuOp, field_width, shaped
from sparsetrain.hw.group import FetchEngine, Group, MaskFetch
from sparsetrain.hw.ppu import PPU, ThresholdFifos

SMALL = CoreParams(dw=4, k_max=2, w_max=3, acc_w=9, groups=1, buf_depth=16, mask_depth=2, imem_depth=16,
                   dir_depth=2, n_slots=1, n_f=2, r_w=8)


# ---- constructors: a wrong type is a TypeError, a bad value a ValueError naming the range

@pytest.mark.parametrize("make, arg, name", [
    (PPU, CoreParams(), "cfg"), (PPU, {"dw": 8}, "cfg"), (ThresholdFifos, None, "cfg"),
    (Group, PPUConfig(), "params"), (Group, HwParams(), "params"), (Core, {"groups": 2}, "params"),
    (FetchEngine, PPUConfig(), "params"), (MaskFetch, 3, "params"), (HostSignature, None, "params"),
])
@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")  # the refused object is never built
def test_a_wrong_parameter_type_is_a_type_error_naming_it(make, arg, name):
    with pytest.raises(TypeError, match=f"{name} = .* is not a"):
        make(arg)
    gc.collect()  # the refused object goes now, under this test's warning filter


@pytest.mark.parametrize("block, params, needle", [
    ("ppu", {"N_F": 3}, "N_F = 3 is out of range; allowed: a power of two in 1 .. 64"),
    ("ppu", {"CNT_W": 4}, "CNT_W = 4 is out of range; allowed: 8 .. 64"),
    ("group", {"BUF_DEPTH": 8}, "BUF_DEPTH = 8 is out of range; allowed: 16 .. 1048576"),
    ("core", {"G": 0}, "G = 0 is out of range; allowed: 1 .. 255"),
    ("core", {"DW": 40}, "DW = 40 is out of range; allowed: 4 .. 31"),
])
def test_a_bad_parameter_value_names_the_parameter_and_its_range(block, params, needle):
    with pytest.raises(ValueError, match=needle):
        to_verilog(block, params)


def _unused(component):
    component._MustUse__silence = True  # built only to look at, never elaborated
    return component


def test_ppu_default_config_is_used_when_none_given():
    assert _unused(PPU()).cfg == PPUConfig() and _unused(PPU(None)).cfg == PPUConfig()


# ---- one NAME=VALUE mapping, driven by each block's parameter dataclass

@pytest.mark.parametrize("name", ["ppu", "group", "core"])
def test_every_block_parameter_maps_onto_its_dataclass(name):
    spec = BLOCKS[name]
    fields = {f.name for f in dataclasses.fields(spec.params_class)}
    assert {ps.field_of(n) for n, ps in spec.params.items()} <= fields
    params = spec.params_from(parse_overrides(spec, ["DW=8", "W_MAX=32"]))
    used = spec.used(params)
    assert set(used) == set(spec.params)
    # derived defaults come back filled in (ACC_W = min(64, 2*DW + 8))
    assert used["DW"] == 8 and used["W_MAX"] == 32 and used["ACC_W"] == 24
    # and the mapping round-trips: the used values rebuild the same parameters
    assert spec.params_from(used) == params


def test_core_g_maps_to_groups():
    spec = BLOCKS["core"]
    assert spec.params_from({"G": 5}).groups == 5 and spec.used(spec.params_from({}))["G"] == 2


def test_a_block_whose_parameter_names_no_field_is_refused():
    with pytest.raises(ValueError, match="NOPE.*'nope'.*CoreParams lacks"):
        BlockSpec(name="x", help="", params={**DATAPATH_PARAMS, "NOPE": ParamSpec(1, "")},
                  params_class=CoreParams, make=Group)
    with pytest.raises(TypeError, match="params_class = .* is not a dataclass"):
        BlockSpec(name="x", help="", params={}, params_class=dict, make=Group)
    with pytest.raises(TypeError, match="make = .* is not callable"):
        BlockSpec(name="x", help="", params={}, params_class=CoreParams, make=None)


# ---- shaped enums: the contract's names and values, widths from the instruction-set table

def _field(opcode: Opcode, name: str) -> int:
    return next(w for n, w, _ in FIELDS[opcode] if n == name)


@pytest.mark.parametrize("shaped_enum, source, width", [
    (PpuOp, Op, _field(Opcode.PPU, "op")), (Mode, RowMode, _field(Opcode.OP, "mode")),
    (OpcodeShape, Opcode, OPCODE_W), (ErrorShape, ErrorCode, ERR_W),
])
def test_shaped_enums_follow_the_contract(shaped_enum, source, width):
    assert Shape.cast(shaped_enum) == Shape(width, signed=False)
    assert {m.name: int(m) for m in shaped_enum} == {m.name: int(m) for m in source}
    assert field_width(Opcode.PPU, "op") == _field(Opcode.PPU, "op")


def test_shaped_refuses_bad_arguments():
    with pytest.raises(TypeError, match="source = .* is not an IntEnum"):
        shaped(dict, 3)
    with pytest.raises(ValueError, match="width = 2 is out of range for Op .*allowed: 3 .. 64"):
        shaped(Op, 2)
    with pytest.raises(TypeError, match="width = .* is not an integer"):
        shaped(Op, 3.0)
    assert shaped(PpuOp, 3) is PpuOp


def test_group_and_core_port_widths_come_from_the_tables():
    g = _unused(Group(SMALL))
    members = g.signature.members
    assert members["rows"].signature.members["row_len"].shape == _field(Opcode.UNIT, "length")
    assert members["unit"].signature.members["word"].shape.size == \
        OPCODE_W + sum(w for _, w, _ in FIELDS[Opcode.UNIT])
    core = HostSignature(SMALL).members
    assert core["ppu_sel_group"].shape == _field(Opcode.PPU, "group")
    assert core["ppu_sel_slot"].shape == _field(Opcode.PPU, "slot")


# ---- the threshold FIFOs as their own component, against golden.bitexact.ppu_model.PPUThresholdFIFO

def test_threshold_fifos_match_the_reference_fifo(seed):
    cfg = PPUConfig(dw=8, k_max=2, w_max=4, n_f=4, n_slots=3, r_w=8)
    dut = ThresholdFifos(cfg)
    rng = random.Random(seed)
    ref = [PPUThresholdFIFO(cfg.n_f) for _ in range(cfg.n_slots)]
    top = (1 << cfg.tau_w) - 1

    async def bench(ctx):
        for _ in range(300):
            action = rng.choice(["push", "push", "push", "clear", "none"])
            slot = rng.randrange(cfg.n_slots)
            if action == "push":
                value = rng.choice([0, top, rng.randrange(top + 1)])
                ctx.set(dut.push.en, 1), ctx.set(dut.push.slot, slot), ctx.set(dut.push.value, value)
                ref[slot].push(value)
            elif action == "clear":
                ctx.set(dut.clear.en, 1), ctx.set(dut.clear.slot, slot)
                ref[slot].clear()
            await ctx.tick()
            ctx.set(dut.push.en, 0), ctx.set(dut.clear.en, 0)
            for s in range(cfg.n_slots):
                f = ref[s]
                ctx.set(dut.tau_read.slot, s)
                ctx.set(dut.status.slot, s)
                assert (ctx.get(dut.tau_read.tau), ctx.get(dut.tau_read.full)) == (f.mean(), f.full)
                assert (ctx.get(dut.status.tau), ctx.get(dut.status.count), ctx.get(dut.status.full)) == \
                    (f.mean(), len(f.entries), f.full)
                for i, entry in enumerate(f.entries):  # oldest first
                    ctx.set(dut.status.index, i)
                    assert ctx.get(dut.status.entry) == entry

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


# ---- the operand fetch engine as its own component: a word per cycle, exactly the row

@pytest.mark.parametrize("counted", [False, True], ids=["until-last", "counted"])
def test_fetch_engine_streams_exactly_the_row(seed, counted):
    p = CoreParams(dw=8, k_max=4, w_max=16, acc_w=24, groups=1, buf_depth=32, mask_depth=2, imem_depth=16,
                   dir_depth=2, n_slots=1, n_f=2, r_w=8)
    rng = random.Random(seed)
    # a buffer of rows: values, offsets and `last` flags
    words = [entry_encode(rng.randrange(-100, 100), i % 7, int(rng.random() < 0.25), p) for i in range(p.buf_depth)]
    dut = FetchEngine(p)
    starts = [rng.randrange(p.buf_depth - 6) for _ in range(12)] + [p.buf_depth - 2]

    def expected(addr: int, count: int) -> list[int] | None:
        """The words the port must deliver; None when the row runs past BUF_DEPTH."""
        if counted:
            return words[addr:addr + count] if addr + count <= p.buf_depth else None
        for end in range(addr, p.buf_depth):
            if (words[end] >> (p.dw + p.off_w)) & 1:
                return words[addr:end + 1]
        return None

    async def memory(ctx):  # a synchronous read port with enable, as lib.memory makes it
        async for clk_edge, rst, en, addr in ctx.tick().sample(dut.read.en, dut.read.addr):
            if en:
                ctx.set(dut.read.data.as_value(), words[addr])

    async def bench(ctx):
        for addr in starts:
            count = rng.randrange(1, 5)
            want = expected(addr, count)
            n = len(want) if want is not None else p.buf_depth - addr
            ctx.set(dut.start.valid, 1), ctx.set(dut.start.addr, addr)
            ctx.set(dut.start.counted, int(counted)), ctx.set(dut.start.count, count)
            await ctx.tick()
            ctx.set(dut.start.valid, 0)
            got, errors = [], 0
            for _ in range(3 * n + 12):
                ready = rng.random() < 0.7
                ctx.set(dut.port.ready, int(ready))
                errors += ctx.get(dut.error)
                if ctx.get(dut.port.valid) and ready:
                    got.append(ctx.get(dut.port.payload.as_value()))
                await ctx.tick()
            if want is not None:
                assert got == want and errors == 0, (addr, count)
            else:  # the read at BUF_DEPTH is refused: one error, every word up to the end delivered
                assert errors == 1 and got == words[addr:p.buf_depth], (addr, count)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_process(memory)
    sim.add_testbench(bench)
    sim.run()
