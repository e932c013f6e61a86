"""The simulated core of `sparsetrain check`, `check --all` and the demo: one place for its
parameters (docs/usage.md).

G = 2 groups (section 11.1's sim default), K_MAX = 5 and W_MAX = 64 (every conv of the small
networks), ACC_W = 52 so that section 2's accumulator rule holds for GTW sums over a whole batch
(up to 2**19 products: a 32 x 32 first layer at batch 32 needs 49 bits), and memories of
moderate depth: the Verilog and the Verilator build grow with them, and a larger layer is split
into several programs.
"""
from __future__ import annotations

from ..arch.isa import CoreParams
from ..arch.microarch import BUILT


SIM_PARAMS = dict(dw=16, k_max=5, w_max=64, acc_w=52, groups=2, buf_depth=1 << 16, mask_depth=1 << 10,
                  imem_depth=1 << 13, dir_depth=1 << 11,
                  # the built second generation, `arch.microarch.BUILT` (section 12: A+B+C+D+E, op reader 4
                  # OP words per cycle, F: up to UNIT_RATE units of a unit block per cycle, 12.9);
                  # `--core PREFETCH=0 --core LOOKAHEAD=1 --core PINGPONG=0 --core SKIP_EMPTY=0
                  # --core OSRC_WINDOW=1 --core UNIT_RATE=1` is the first
                  prefetch=int(BUILT.prefetch), lookahead=BUILT.lookahead, pingpong=int(BUILT.pingpong),
                  skip_empty=int(BUILT.skip_empty), op_scan=BUILT.op_scan, osrc_window=BUILT.osrc_window,
                  unit_rate=BUILT.unit_rate)
TIMEOUT_CODE = 15  # reported as the RTL error code when the watchdog stopped a run


# The second-generation switches of the simulated core (docs/architecture.md section 12), by
# their NAME=VALUE names; SIM_PARAMS sets the built set (the core's own defaults are the first
# generation).
CORE_SWITCHES = {"PREFETCH": "prefetch", "LOOKAHEAD": "lookahead", "PINGPONG": "pingpong",
                 "SKIP_EMPTY": "skip_empty", "OP_SCAN": "op_scan", "OSRC_WINDOW": "osrc_window",
                 "UNIT_RATE": "unit_rate"}


def sim_params(**overrides: int) -> CoreParams:
    return CoreParams(**{**SIM_PARAMS, **overrides})


def parse_switches(items: list[str] | None) -> dict[str, int]:
    """``["PREFETCH=1", "SKIP_EMPTY=1"]`` -> CoreParams keywords; a bad name or value: ValueError
    naming it (the ranges are CoreParams' own)."""
    out: dict[str, int] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        name = name.strip().upper()
        if not sep or name not in CORE_SWITCHES:
            raise ValueError(f"--core = {item!r} is out of range; allowed: NAME=VALUE with NAME one of "
                             f"{', '.join(CORE_SWITCHES)}")
        try:
            out[CORE_SWITCHES[name]] = int(value, 0)
        except ValueError:
            raise ValueError(f"{name} = {value!r} is not an integer; allowed: an integer") from None
    CoreParams(**out)  # the ranges, named
    return out
