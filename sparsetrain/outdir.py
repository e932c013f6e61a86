"""Where a command may write: the output-folder rule of every `sparsetrain` command.

A command writes only into a folder it created, or one carrying its marker file
``.sparsetrain-run`` (written when it created or adopted an empty folder). The marker lists
every file and folder the tool wrote there, so ``--force`` removes exactly those and nothing
of the user's; a name the tool would write that it did not write before is the user's and is
never replaced, ``--force`` included. Every check happens in ``plan`` before anything is
created or removed, so a refused command leaves no trace. Files are written atomically
(temporary file in the same folder, then ``os.replace``).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

MARKER = ".sparsetrain-run"
# the process umask, read once at import (os.umask can only be read by setting it): atomic writes
# give their file the mode an ordinary open() would (mkstemp makes it 0600)
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def _read_marker(path: Path) -> dict:
    m = path / MARKER
    try:
        data = json.loads(m.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("written", []), list):
            raise ValueError
        for w in data.get("written", []):  # plain names in this folder only: --force removes them
            if not isinstance(w, str) or w in ("", ".", "..", MARKER) or "/" in w or "\\" in w:
                raise ValueError
        return data
    except (OSError, ValueError):
        raise ValueError(f"{m}: not a sparsetrain marker (JSON with a 'written' list of names in this folder); "
                         f"allowed: the file a sparsetrain command wrote; remove the folder or choose another"
                         ) from None


def _writable_parent(path: Path) -> Path:
    """The nearest existing folder above ``path`` (where mkdir would start)."""
    p = path.absolute()
    while not p.exists():
        p = p.parent
    return p


@dataclass
class OutDir:
    """A checked output folder; ``apply`` creates/adopts it and clears the earlier run if forced."""

    path: Path
    command: str
    option: str
    exists: bool
    written: list[str] = field(default_factory=list)   # what earlier runs recorded in the marker
    clear: list[str] = field(default_factory=list)     # what apply() removes (--force)

    def apply(self) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        for name in self.clear:
            p = self.path / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()
        self.written = [w for w in self.written if w not in self.clear]
        self._save()
        return self.path

    def record(self, *names: str | Path) -> None:
        """Note files/folders (relative to the folder, or absolute inside it) as written by the tool."""
        for n in names:
            rel = Path(n)
            try:
                rel = rel.relative_to(self.path)
            except ValueError:
                pass
            top = rel.parts[0] if rel.parts else ""
            if top and top != MARKER and top not in self.written:
                self.written.append(top)
        self._save()

    def _save(self) -> None:
        atomic_write_text(self.path / MARKER, json.dumps({"tool": "sparsetrain", "command": self.command,
                                                          "written": self.written}, indent=1) + "\n")

    def discard(self) -> None:
        """After a failure: remove the folder if this command created it (all of it is the tool's)."""
        if not self.exists and self.path.is_dir():
            shutil.rmtree(self.path, ignore_errors=True)

    def remove_if_unused(self) -> None:
        """After a failure before anything was written: remove a folder this command created (or
        the marker it put into an empty folder)."""
        if not self.path.is_dir() or self.written or {p.name for p in self.path.iterdir()} - {MARKER}:
            return
        if not self.exists:
            shutil.rmtree(self.path, ignore_errors=True)
        else:
            (self.path / MARKER).unlink(missing_ok=True)


def plan(path: str | Path, command: str, *, force: bool = False, writes: tuple[str, ...] = (),
         option: str = "--out", replace_own: bool = False) -> OutDir:
    """Check that ``command`` may write into ``path``; nothing is created or removed here.

    ``writes``: names the command will write at the top of the folder (a name there that the
    tool did not write is refused). An earlier run's files are refused unless ``force`` (then
    ``apply`` removes exactly them) or ``replace_own`` (regenerated in place, e.g. Verilog).
    """
    p = Path(path)
    where = f"{option} = {str(p)!r}"
    if p.exists() and not p.is_dir():
        raise ValueError(f"{where} is a file; allowed: a new folder, an empty one, or one an earlier "
                         f"`sparsetrain {command}` wrote")
    parent = _writable_parent(p)
    if not parent.is_dir():
        raise ValueError(f"{where}: {parent} is a file, not a folder; allowed: a path under a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{where}: {parent} is not writable; allowed: a folder you can write to")
    if not p.exists():
        return OutDir(p, command, option, exists=False)
    entries = sorted(e.name for e in p.iterdir())
    if MARKER not in entries:
        if entries:
            raise ValueError(f"{where} holds files (e.g. {p / entries[0]}) and no {MARKER} marker, so they may be "
                             f"yours; allowed: a new or empty folder, or one an earlier sparsetrain command made "
                             f"(nothing of yours is replaced, --force included)")
        return OutDir(p, command, option, exists=True)
    marker = _read_marker(p)
    if marker.get("command", command) != command:  # one command's folder is not another's to clear
        raise ValueError(f"{where} was made by `sparsetrain {marker.get('command')}`; allowed: a new folder, or one "
                         f"an earlier `sparsetrain {command}` made")
    written = [str(w) for w in marker.get("written", [])]
    for name in writes:
        if (p / name).exists() and name not in written:
            raise ValueError(f"{p / name} exists and was not written by sparsetrain; it is never replaced "
                             f"(--force included); allowed: move it away or choose another {option}")
    earlier = [w for w in written if (p / w).exists() or (p / w).is_symlink()]
    clear: list[str] = []
    if force:
        clear = earlier
    elif not replace_own:
        clash = [w for w in earlier if w in writes or not writes]
        if clash:
            raise ValueError(f"{p / clash[0]} exists (an earlier `sparsetrain {command}` run); allowed: another "
                             f"{option}, or --force to remove that run's files ({', '.join(earlier)})")
    return OutDir(p, command, option, exists=True, written=written, clear=clear)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and os.replace."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def check_file_target(path: str | Path | None, option: str) -> Path | None:
    """A single output file given by the user (``--json OUT``): its folder must exist and be writable,
    and it must not be a folder. Checked before a long run, so the run is never wasted."""
    if path is None:
        return None
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{option} = {str(p)!r} is a folder; allowed: a file path")
    parent = p.absolute().parent
    if not parent.is_dir():
        raise ValueError(f"{option} = {str(p)!r}: folder {parent} does not exist; allowed: a file in an "
                         f"existing folder")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise ValueError(f"{option} = {str(p)!r} is not writable; allowed: a file you can write")
    return p
