"""Registry of the generated blocks: name -> how to build it from NAME=VALUE parameters.

Each block module in ``hw/`` defines ``BLOCK = BlockSpec(...)``; ``BLOCKS`` discovers them
on first use, so adding a block never means editing this file. Used by
``sparsetrain verilog`` and by synthesis.
"""
from __future__ import annotations

import importlib
import pkgutil
import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

from amaranth.back import verilog
from amaranth.lib import wiring


@dataclass(frozen=True)
class ParamSpec:
    """One elaboration parameter: default (None = derived by the block), help text, and the field
    of the block's parameter dataclass it sets (``attr``; default: the NAME in lower case)."""

    default: int | None
    help: str
    attr: str = ""

    def field_of(self, name: str) -> str:
        return self.attr or name.lower()


# The number-format parameters every datapath block takes (docs/architecture.md section 2),
# stated once; a block adds its own and may reword K_MAX / W_MAX for what they size in it.
DATAPATH_PARAMS: dict[str, ParamSpec] = {
    "DW": ParamSpec(16, "data width of activations, weights and gradients (4 .. 31)"),
    "K_MAX": ParamSpec(11, "largest run-time kernel size (1 .. 16)"),
    "W_MAX": ParamSpec(64, "longest row (2 .. 4096, >= K_MAX)"),
    "ACC_W": ParamSpec(None, "accumulator width (2*DW+1 .. 64; default min(64, 2*DW+8))"),
}


@dataclass(frozen=True)
class BlockSpec:
    """A generated block: its NAME=VALUE parameters map onto the fields of ``params_class`` (a
    dataclass that validates them on creation) and ``make`` builds the component from it.

    The one mapping for every block: NAME -> ``ParamSpec.field_of(NAME)``; the parameters used
    are read back from the dataclass (so derived defaults, ACC_W = None, come back filled in)."""

    name: str
    help: str
    params: dict[str, ParamSpec]
    params_class: type | None = None
    make: Callable[[Any], wiring.Component] | None = None
    toplevel: str = field(default="")
    # Synthesise module by module (synth/generic.py) unless asked otherwise: for blocks whose
    # flat run is too slow, or whose parts (the core's controller) are reported separately.
    synth_keep_hierarchy: bool = False

    def __post_init__(self) -> None:
        if not (dataclasses.is_dataclass(self.params_class) and isinstance(self.params_class, type)):
            raise TypeError(f"block {self.name}: params_class = {self.params_class!r} is not a dataclass; "
                            "allowed: a parameter dataclass")
        if not callable(self.make):
            raise TypeError(f"block {self.name}: make = {self.make!r} is not callable; allowed: a component class")
        fields = {f.name for f in dataclasses.fields(self.params_class)}
        for pname, ps in self.params.items():
            if ps.field_of(pname) not in fields:
                raise ValueError(f"block {self.name}: parameter {pname} maps to field {ps.field_of(pname)!r}, "
                                 f"which {self.params_class.__name__} lacks; allowed: {', '.join(sorted(fields))}")

    @property
    def top(self) -> str:
        return self.toplevel or self.name

    def params_from(self, values: Mapping[str, int | None]):
        """The validated ``params_class`` instance; a NAME not in ``values`` takes its default."""
        kwargs = {ps.field_of(n): values.get(n, ps.default) for n, ps in self.params.items()}
        return self.params_class(**kwargs)

    def used(self, params) -> dict[str, int]:
        """Every parameter as the dataclass holds it (derived defaults filled in)."""
        return {n: int(getattr(params, ps.field_of(n))) for n, ps in self.params.items()}

    def instantiate(self, values: Mapping[str, int | None]) -> tuple[wiring.Component, dict[str, int]]:
        """(component, every parameter actually used) from a full NAME -> value dict."""
        params = self.params_from(values)
        return self.make(params), self.used(params)


def parse_overrides(spec: BlockSpec, items: Mapping[str, str | int] | list[str] | None) -> dict[str, int | None]:
    """``["DW=8", ...]`` or ``{"DW": "8"}`` -> full parameter dict; unknown names rejected."""
    if items is None:
        items = {}
    if not isinstance(items, Mapping):
        pairs: dict[str, str] = {}
        for item in items:
            if "=" not in item:
                raise ValueError(f"param = {item!r} is not NAME=VALUE; allowed names: {', '.join(spec.params)}")
            name, value = item.split("=", 1)
            pairs[name.strip()] = value.strip()
        items = pairs
    values: dict[str, int | None] = {name: ps.default for name, ps in spec.params.items()}
    for name, raw in items.items():
        if name not in spec.params:
            raise ValueError(f"param = {name!r} is unknown for block {spec.name}; allowed: {', '.join(spec.params)}")
        try:
            values[name] = raw if isinstance(raw, int) else int(str(raw), 0)
        except ValueError:
            raise ValueError(f"{name} = {raw!r} is not an integer; allowed: an integer") from None
    return values


def elaborate(name: str, overrides: Mapping[str, str | int] | list[str] | None = None
              ) -> tuple[wiring.Component, dict[str, int], BlockSpec]:
    spec = get_block(name)
    component, used = spec.instantiate(parse_overrides(spec, overrides))
    return component, used, spec


def to_verilog(name: str, overrides: Mapping[str, str | int] | list[str] | None = None) -> tuple[str, dict[str, int]]:
    """Verilog text of a block (top module named after the block) and the parameters used."""
    component, used, spec = elaborate(name, overrides)
    return verilog.convert(component, name=spec.top, emit_src=False), used


class _Registry(Mapping[str, BlockSpec]):
    """Lazily filled from every ``hw`` module that defines ``BLOCK``."""

    def __init__(self) -> None:
        self._blocks: dict[str, BlockSpec] | None = None

    def _load(self) -> dict[str, BlockSpec]:
        if self._blocks is None:
            from .. import hw

            found: dict[str, BlockSpec] = {}
            for info in sorted(pkgutil.iter_modules(hw.__path__), key=lambda i: i.name):
                if info.name.startswith("_") or info.name in ("blocks", "lint"):
                    continue
                mod = importlib.import_module(f"{hw.__name__}.{info.name}")
                spec = getattr(mod, "BLOCK", None)
                if isinstance(spec, BlockSpec):
                    found[spec.name] = spec
            self._blocks = found
        return self._blocks

    def __getitem__(self, key: str) -> BlockSpec:
        return self._load()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


BLOCKS: Mapping[str, BlockSpec] = _Registry()


def get_block(name: str) -> BlockSpec:
    if name not in BLOCKS:
        raise ValueError(f"block = {name!r} is unknown; allowed: {', '.join(sorted(BLOCKS))}")
    return BLOCKS[name]


def write_block(name: str, overrides: Mapping[str, str | int] | list[str] | None, out_dir,
                made: tuple[str, dict[str, int]] | None = None) -> tuple:
    """Write ``<out_dir>/<block>.v`` and ``<block>.json`` (every parameter used); return both paths.

    ``made``: the ``to_verilog`` result when the caller already has it. Each file is written to a
    temporary name and renamed, so a reader never sees half a file."""
    import json
    import os
    from importlib import metadata
    from pathlib import Path

    text, used = made if made is not None else to_verilog(name, overrides)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vpath, jpath = out / f"{name}.v", out / f"{name}.json"
    meta = json.dumps({"block": name, "toplevel": get_block(name).top, "params": used,
                       "amaranth": metadata.version("amaranth")}, indent=2) + "\n"
    for path, content in ((vpath, text), (jpath, meta)):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(content)
        os.replace(tmp, path)
    return vpath, jpath
