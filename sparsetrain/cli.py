"""The `sparsetrain` command: one subcommand per module in sparsetrain/commands/.

Each command module defines NAME, HELP, add_arguments(parser) and run(args) -> int, and is
also usable as a plain Python API through the functions it calls. Only the module of the
command being run is imported (the others are read for NAME and HELP without importing
them), so light commands such as `doctor` never pay for torch or Amaranth.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import os
import sys
from pathlib import Path

from . import __version__, commands


def _command_table() -> dict[str, tuple[str, str]]:
    """NAME -> (module name, HELP), read from the command modules' source."""
    table: dict[str, tuple[str, str]] = {}
    for path in sorted(Path(commands.__file__).parent.glob("*.py")):
        if path.name.startswith("_"):
            continue
        consts: dict[str, str] = {}
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                    and isinstance(node.targets[0], ast.Name) and node.targets[0].id in ("NAME", "HELP"):
                consts[node.targets[0].id] = ast.literal_eval(node.value)
        if "NAME" in consts:
            table[consts["NAME"]] = (path.stem, consts.get("HELP", ""))
    return table


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparsetrain", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"sparsetrain {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in _command_table().items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            mod = importlib.import_module(f"{commands.__name__}.{module}")
            mod.add_arguments(p)
            p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except BrokenPipeError:  # output piped into a reader that stopped (| head): nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, OSError) as exc:  # bad input (or an unusable path): one clear line, no traceback
        print(f"sparsetrain {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
