"""Reusable cocotb 1.9 endpoints for ``amaranth.lib.stream`` ports of a Verilog top.

Amaranth flattens a stream port ``NAME`` into the top-level signals ``NAME__valid``,
``NAME__ready`` and ``NAME__payload`` (one vector; struct fields packed from bit 0 upwards
in declaration order, array elements from index 0 upwards). This module provides:

* ``pack`` / ``unpack``: payload dicts <-> ints for any ``amaranth.lib.data`` layout;
* ``random_handshakes`` / ``always``: back-pressure generators, the per-cycle offer (source)
  or accept (sink) decisions as an iterator of bools;
* ``StreamSource``: drives a queue of payloads with ``valid`` gaps from such a generator;
* ``StreamSink``: accepts payloads with ``ready`` back-pressure from such a generator;
* ``ClockedBench``: one coroutine that steps every endpoint once per cycle (much cheaper
  than one coroutine per stream: about half the simulator callbacks);
* ``BlockTB``: the base of the block testbenches (``pe_tb.PeTB``, ``ppu_tb.PpuTB``): clock,
  ``reset()``, the bench, a seeded RNG and the list of problems found;
* ``Scoreboard``: in-order comparison of expected and observed items.

Timing discipline (avoids every race between the testbench and the design): all inputs
change just after the falling edge; after they settle (``ReadOnly``) every endpoint samples
``valid``/``ready``/``payload``; a transfer happens at the next rising edge exactly when
both were high at that sample point.
"""
from __future__ import annotations

import itertools
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from amaranth.hdl import Shape
from amaranth.lib import data

__all__ = ["pack", "unpack", "payload_width", "random_handshakes", "always", "StreamSource", "StreamSink",
           "ClockedBench", "BlockTB", "Scoreboard", "signal_int"]

RESET_CYCLES = 2  # cycles rst is held by BlockTB.reset() unless told otherwise


def payload_width(layout: data.Layout | Shape) -> int:
    return Shape.cast(layout).width


def pack(layout: data.Layout | Shape, value: Any) -> int:
    """A payload (dict for structs, list for arrays, int for plain shapes) -> unsigned int."""
    if isinstance(layout, data.StructLayout):
        if not isinstance(value, dict):
            raise ValueError(f"value = {value!r} is not a dict; allowed: a dict with fields {list(layout.members)}")
        unknown = set(value) - set(layout.members)
        if unknown:
            raise ValueError(f"field = {sorted(unknown)} is unknown; allowed: {list(layout.members)}")
        out = 0
        for name, fld in layout:
            out |= pack(fld.shape, value.get(name, 0)) << fld.offset
        return out
    if isinstance(layout, data.ArrayLayout):
        items = list(value)
        if len(items) > layout.length:
            raise ValueError(f"array length = {len(items)} is out of range; allowed: 0 .. {layout.length}")
        ew = payload_width(layout.elem_shape)
        out = 0
        for i, item in enumerate(items):
            out |= pack(layout.elem_shape, item) << (i * ew)
        return out
    shape = Shape.cast(layout)
    v = int(value)
    lo, hi = (-(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1) if shape.signed else (0, (1 << shape.width) - 1)
    if not lo <= v <= hi:
        raise ValueError(f"value = {v} is out of range; allowed: {lo} .. {hi} ({shape})")
    return v & ((1 << shape.width) - 1)


def unpack(layout: data.Layout | Shape, raw: int) -> Any:
    """Inverse of ``pack``: unsigned int -> dict / list / int (signed fields sign-extended)."""
    if isinstance(layout, data.StructLayout):
        return {name: unpack(fld.shape, (raw >> fld.offset) & ((1 << payload_width(fld.shape)) - 1))
                for name, fld in layout}
    if isinstance(layout, data.ArrayLayout):
        ew = payload_width(layout.elem_shape)
        return [unpack(layout.elem_shape, (raw >> (i * ew)) & ((1 << ew) - 1)) for i in range(layout.length)]
    shape = Shape.cast(layout)
    raw &= (1 << shape.width) - 1
    if shape.signed and raw >> (shape.width - 1):
        raw -= 1 << shape.width
    return raw


def signal_int(handle) -> int:
    """Integer value of a signal; X/Z (Icarus before reset) reads as 0."""
    v = handle.value
    return v.integer if v.is_resolvable else 0


def always() -> Iterator[bool]:
    """No back-pressure: offer (or accept) in every cycle."""
    return itertools.repeat(True)


def random_handshakes(rng: random.Random, probability: float) -> Iterator[bool]:
    """Seeded random back-pressure: each draw is True with ``probability`` (1.0: ``always()``,
    which draws nothing from ``rng``)."""
    if not 0.0 < probability <= 1.0:
        raise ValueError(f"probability = {probability} is out of range; allowed: (0, 1]")
    if probability >= 1.0:
        return always()
    return (rng.random() < probability for _ in itertools.count())


class _Endpoint:
    def __init__(self, dut, name: str, layout, pattern: Iterator[bool]):
        self.name, self.layout, self.pattern = name, layout, pattern
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload", None)
        self.transfers = 0
        self.hold = False  # while True the endpoint neither offers nor accepts (e.g. in reset)

    def handshake(self) -> bool:
        return bool(signal_int(self.valid) and signal_int(self.ready))


def _pattern(pattern: Iterator[bool] | None, rng: random.Random | None, probability: float) -> Iterator[bool]:
    if pattern is not None:
        return pattern
    if probability < 1.0 and rng is None:
        raise ValueError(f"rng = None with probability = {probability}; allowed: a random.Random "
                         "(or a pattern) for random back-pressure")
    return random_handshakes(rng, probability)


class StreamSource(_Endpoint):
    """Drives ``name`` from a queue; ``valid`` (a back-pressure generator) decides in each cycle
    whether an item is offered (default: ``random_handshakes(rng, p_valid)``).

    Once ``valid`` is high it stays high with the same payload until the transfer (the
    AXI-style rule that the DUT may rely on). ``on_transfer(item, cycle)`` is called for
    every item the DUT accepts.
    """

    def __init__(self, dut, name: str, layout, *, rng: random.Random | None = None, p_valid: float = 1.0,
                 valid: Iterator[bool] | None = None, on_transfer: Callable[[Any, int], None] | None = None):
        super().__init__(dut, name, layout, _pattern(valid, rng, p_valid))
        self.queue: deque = deque()
        self.offering = False
        self.on_transfer = on_transfer
        self.valid.value = 0
        self._driven = False

    def send(self, items: Iterable[Any]) -> None:
        self.queue.extend(items)

    def drop(self) -> None:
        """Withdraw the item on offer (a reset: the DUT forgot the handshake in progress)."""
        self.offering = False

    def drive(self) -> None:
        if self.hold:
            self.offering = False
        elif not self.offering and self.queue and next(self.pattern):
            self.offering = True
            if self.payload is not None:
                item = self.queue[0]
                self.payload.value = item if isinstance(item, int) else pack(self.layout, item)
        if self.offering != self._driven:  # simulator writes are the expensive part
            self.valid.value = int(self.offering)
            self._driven = self.offering

    def sample(self, cycle: int) -> Any:
        if self.offering and signal_int(self.ready):
            item = self.queue.popleft()
            self.offering = False
            self.transfers += 1
            if self.on_transfer:
                self.on_transfer(item, cycle)
            return item
        return None

    @property
    def idle(self) -> bool:
        return not self.queue


class StreamSink(_Endpoint):
    """Accepts ``name`` when ``ready`` (a back-pressure generator, default
    ``random_handshakes(rng, p_ready)``) says so; unpacks every transfer."""

    def __init__(self, dut, name: str, layout, *, rng: random.Random | None = None, p_ready: float = 1.0,
                 ready: Iterator[bool] | None = None, on_transfer: Callable[[Any, int], None] | None = None,
                 raw: bool = False):
        super().__init__(dut, name, layout, _pattern(ready, rng, p_ready))
        self.received: list = []
        self.on_transfer = on_transfer
        self.raw = raw
        self.accepting = False
        self.ready.value = 0
        self._driven = False

    def drive(self) -> None:
        self.accepting = not self.hold and next(self.pattern)
        if self.accepting != self._driven:
            self.ready.value = int(self.accepting)
            self._driven = self.accepting

    def sample(self, cycle: int) -> Any:
        if self.accepting and signal_int(self.valid):
            raw = signal_int(self.payload) if self.payload is not None else 0
            item = raw if self.raw else unpack(self.layout, raw)
            self.transfers += 1
            if self.on_transfer:
                self.on_transfer(item, cycle)
            else:
                self.received.append(item)
            return item
        return None

    @property
    def blocked(self) -> bool:
        """The DUT offers a payload this cycle that the sink refuses."""
        return bool(signal_int(self.valid)) and not self.accepting


class ClockedBench:
    """Steps all endpoints once per clock cycle (see the module docstring for the timing).

    ``await bench.step()`` advances one cycle and returns the cycle number; hooks added with
    ``on_cycle`` run after sampling, with the cycle number, while values are still stable.
    """

    def __init__(self, clk, endpoints: Iterable[_Endpoint] = ()):
        from cocotb.triggers import FallingEdge, ReadOnly  # only inside a simulator

        self._falling, self._readonly = FallingEdge(clk), ReadOnly()
        self.endpoints: list[_Endpoint] = list(endpoints)
        self.hooks: list[Callable[[int], None]] = []
        self.before_drive: list[Callable[[int], None]] = []  # may write DUT inputs (e.g. rst)
        self.cycle = 0

    def add(self, endpoint: _Endpoint) -> _Endpoint:
        self.endpoints.append(endpoint)
        return endpoint

    def on_cycle(self, hook: Callable[[int], None]) -> None:
        self.hooks.append(hook)

    async def step(self) -> int:
        await self._falling
        for h in self.before_drive:
            h(self.cycle + 1)
        for e in self.endpoints:
            e.drive()
        await self._readonly
        self.cycle += 1
        for e in self.endpoints:
            e.sample(self.cycle)
        for h in self.hooks:
            h(self.cycle)
        return self.cycle

    async def run_until(self, done: Callable[[], bool], max_cycles: int) -> int:
        """Step until ``done()``; raise (never hang) after ``max_cycles``."""
        start = self.cycle
        while not done():
            if self.cycle - start >= max_cycles:
                raise AssertionError(f"timeout: not done after {max_cycles} cycles")
            await self.step()
        return self.cycle - start


class BlockTB:
    """Base of a block testbench: the clock, ``reset()``, one ``ClockedBench``, a seeded RNG and
    ``problems`` (everything found wrong, reported at once by ``finish``).

    A subclass adds its endpoints with ``self.bench.add`` and overrides the per-cycle hooks:
    ``drive(cycle)`` (before the endpoints drive, while not in reset; may write DUT inputs and
    call ``reset()``, which then starts in this very cycle) and ``sample(cycle)`` (after every
    endpoint sampled; values still stable). The DUT has inputs ``clk`` and ``rst``.
    """

    CLOCK_NS = 10

    def __init__(self, dut, seed: int, *, p_valid: float = 1.0, p_ready: float = 1.0):
        self.dut, self.seed = dut, int(seed)
        self.rng = random.Random(self.seed)
        self.p_valid, self.p_ready = float(p_valid), float(p_ready)
        self.bench = ClockedBench(dut.clk)
        self.bench.before_drive.append(self._before_drive)
        self.bench.on_cycle(self.sample)
        self.problems: list[str] = []
        self._reset_left = 0
        self._rst_driven: bool | None = None

    # ---- back-pressure: every source and sink of the block draws from the same seeded RNG
    def valid_pattern(self) -> Iterator[bool]:
        return random_handshakes(self.rng, self.p_valid)

    def ready_pattern(self) -> Iterator[bool]:
        return random_handshakes(self.rng, self.p_ready)

    @property
    def backpressure(self) -> bool:
        return self.p_valid < 1.0 or self.p_ready < 1.0

    # ---- clock and reset
    def start(self) -> None:
        """Start the clock with the design in reset (``RESET_CYCLES`` cycles once stepping)."""
        import cocotb
        from cocotb.clock import Clock

        cocotb.start_soon(Clock(self.dut.clk, self.CLOCK_NS, units="ns").start())
        self._set_rst(True)
        self.reset()

    def reset(self, cycles: int = RESET_CYCLES) -> None:
        """Hold ``rst`` for ``cycles`` cycles from the next drive (from this one when called in
        ``drive``); every endpoint is held too (no offer, no accept). Only bookkeeping here, so
        that ``sample`` (read-only phase) may call it too."""
        self._reset_left = cycles

    @property
    def in_reset(self) -> bool:
        return self._reset_left > 0

    def _set_rst(self, on: bool) -> None:
        if on != self._rst_driven:
            self.dut.rst.value = int(on)
            for e in self.bench.endpoints:
                e.hold = on
            self._rst_driven = on

    def _before_drive(self, cycle: int) -> None:
        if not self._reset_left:
            self._set_rst(False)
            self.drive(cycle)
        if self._reset_left:
            self._set_rst(True)
            self._reset_left -= 1

    # ---- per-cycle hooks of a subclass
    def drive(self, cycle: int) -> None:
        pass

    def sample(self, cycle: int) -> None:
        pass

    # ---- end of a run
    def all_problems(self, board: "Scoreboard") -> list[str]:
        """``problems`` and the scoreboard's own, in one list (empty: everything matched)."""
        try:
            board.check()
        except AssertionError as exc:
            return [*self.problems, str(exc)]
        return list(self.problems)

    def fail(self, problems: list[str]) -> None:
        """One AssertionError with the seed and every problem, or nothing when there is none."""
        if problems:
            raise AssertionError(f"seed {self.seed}: " + " | ".join(problems))


@dataclass
class Scoreboard:
    """In-order scoreboard: ``expect`` items, ``observe`` DUT items, ``check`` at the end."""

    name: str = "scoreboard"
    compare: Callable[[Any, Any], bool] = lambda a, b: a == b
    expected: deque = field(default_factory=deque)
    matched: int = 0
    mismatches: list = field(default_factory=list)
    unexpected: list = field(default_factory=list)

    def expect(self, item: Any) -> None:
        self.expected.append(item)

    def observe(self, item: Any) -> bool:
        if not self.expected:
            self.unexpected.append(item)
            return False
        want = self.expected.popleft()
        if self.compare(want, item):
            self.matched += 1
            return True
        self.mismatches.append((want, item))
        return False

    def check(self, limit: int = 5) -> None:
        problems = []
        if self.mismatches:
            problems.append(f"{len(self.mismatches)} mismatches, first: " +
                            "; ".join(f"expected {w!r} got {g!r}" for w, g in self.mismatches[:limit]))
        if self.unexpected:
            problems.append(f"{len(self.unexpected)} unexpected items, first: {self.unexpected[:limit]!r}")
        if self.expected:
            problems.append(f"{len(self.expected)} expected items never seen, first: {list(self.expected)[:limit]!r}")
        if problems:
            raise AssertionError(f"{self.name}: {self.matched} matched; " + " | ".join(problems))

