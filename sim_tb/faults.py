"""Fault injection for the checker self-tests, kept apart from the testbenches.

A testbench checks the design against the expectations in its stimulus file and nothing else.
Each fault here is a hook for a driver's ``stimulus_hook`` (``pe_driver.run_pe_ops``,
``ppu_driver.run_ppu``): it changes one expectation in the written stimulus file, so a run of a
correct design must fail, and fail for that reason. Only the self-tests (tests/test_pe.py,
tests/test_ppu.py) use these.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

StimulusHook = Callable[[Path], None]


def edit_stimulus(edit: Callable[[dict[str, np.ndarray]], None]) -> StimulusHook:
    """A hook that loads the stimulus npz, applies ``edit`` to its arrays and writes it back."""
    def hook(path: Path) -> None:
        arrays = dict(np.load(path))
        edit(arrays)
        np.savez(path, **arrays)
    return hook


def _first(mask: np.ndarray, what: str) -> int:
    idx = np.flatnonzero(mask)
    if not idx.size:
        raise ValueError(f"stimulus = no {what} to corrupt; allowed: a stimulus with at least one")
    return int(idx[0])


def _pe_lane(a: dict[str, np.ndarray]) -> None:
    beats = a["beats"]
    row = _first(beats[:, 2] > 0, "beat with a lane")  # first beat that carries a lane
    beats[row, 4] += 1


def _pe_cycles(a: dict[str, np.ndarray]) -> None:
    a["exp_cycles"][_first(a["exp_error"] == 0, "accepted op")] += 1


def _pe_schedule(a: dict[str, np.ndarray]) -> None:
    a["exp_f"][_first(a["exp_error"] == 0, "accepted op")] += 1


def _pe_error(a: dict[str, np.ndarray]) -> None:
    a["exp_error"][0] ^= 1


def _ppu_entry(a: dict[str, np.ndarray]) -> None:
    a["exp_entries"][_first(np.ones(len(a["exp_entries"]), bool), "output entry"), 1] ^= 1


def _ppu_status(a: dict[str, np.ndarray]) -> None:
    a["exp_status"][len(a["exp_status"]) // 2, 0] += 1  # row_nnz of a command in the middle


def _ppu_cycles(a: dict[str, np.ndarray]) -> None:
    a["exp_cycles"][_first(a["exp_cycles"] > 0, "command")] += 1


# name -> (hook, text the testbench's failure must contain)
PE_FAULTS: dict[str, tuple[StimulusHook, str]] = {
    "wrong lane": (edit_stimulus(_pe_lane), "pe beats: "),
    "wrong cycle count": (edit_stimulus(_pe_cycles), "off the timing contract"),
    "wrong final-beat cycle": (edit_stimulus(_pe_schedule), "off the schedule"),
    "wrong cfg_error": (edit_stimulus(_pe_error), "cfg_error wrong"),
}
PPU_FAULTS: dict[str, tuple[StimulusHook, str]] = {
    "wrong entry": (edit_stimulus(_ppu_entry), "ppu entries: "),
    "wrong status": (edit_stimulus(_ppu_status), "status after txn"),
    "wrong cycle count": (edit_stimulus(_ppu_cycles), "off the timing contract"),
}
