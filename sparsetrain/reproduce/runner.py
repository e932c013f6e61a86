"""Run a reproduction plan: one ``golden.training.train`` run directory per cell, resumable, finished runs skipped.

The sweep folder holds ``plan.json`` (the plan it was started with; a later ``resume`` must
give the same plan, ``threads`` excepted) and one run directory per cell, named by
:attr:`RunSpec.name`. A run directory is what ``sparsetrain train --out`` writes: ``metrics.json``
once the run has finished, ``checkpoint.pt`` after every epoch (docs/distributed.md). So:

* ``metrics.json`` present: finished, skipped;
* ``checkpoint.pt`` only: resumed from its last epoch (the same as ``sparsetrain train ... --resume``);
* neither: started.

Several sweep processes may work on one folder at once (one per free core): a run is claimed
by creating ``locks/<run>.lock`` exclusively; a lock whose process is gone is taken over.
SIGINT/SIGTERM stop the current run after its step with a checkpoint and end the sweep.
"""
from __future__ import annotations

import fnmatch
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import outdir
from ..golden.training.data import fashion_mnist
from ..golden.training.train import CHECKPOINT_NAME, METRICS_NAME, TrainingInterrupted, train
from .plan import Plan, RunSpec, plan_from_dict

PLAN_NAME, LOCKS = "plan.json", "locks"
COMMAND = "reproduce"
# plan fields a resumed sweep may change (train allows its thread count to change on resume)
RESUME_MAY_CHANGE = ("threads", "note")
MATRIX = ("networks", "settings", "seeds")  # a resumed sweep may list more of them


@dataclass
class SweepReport:
    """What one call of :func:`run_sweep` did with each planned run, in plan order."""

    actions: dict[str, str] = field(default_factory=dict)  # run name -> finished-before / started / ...
    interrupted: TrainingInterrupted | None = None

    def names(self, action: str) -> list[str]:
        return [n for n, a in self.actions.items() if a == action]


def run_state(run_dir: Path) -> str:
    """``finished``, ``partial`` (a checkpoint to resume) or ``missing``."""
    if (run_dir / METRICS_NAME).is_file():
        return "finished"
    if (run_dir / CHECKPOINT_NAME).is_file():
        return "partial"
    return "missing"


def select(runs: list[RunSpec], only: list[str] | None) -> list[RunSpec]:
    """Runs whose name matches one of the shell patterns ``only`` (all when None)."""
    if not only:
        return runs
    picked = [r for r in runs if any(fnmatch.fnmatchcase(r.name, pat) for pat in only)]
    if not picked:
        raise ValueError(f"only = {only!r} matches no run of the plan; allowed: patterns of run names such as "
                         f"{runs[0].name!r} or 'resnet18-*-s0'")
    return picked


def check_sweep_dir(plan: Plan, out: Path, *, resume: bool) -> outdir.OutDir:
    """The sweep folder, checked before anything is written: a new sweep needs a new (or empty)
    folder, a resumed one the folder of a sweep with the same plan."""
    stored = out / PLAN_NAME
    if resume:
        if not stored.is_file():
            raise FileNotFoundError(f"{stored} does not exist; --resume needs the folder of a started sweep")
        try:
            theirs = plan_from_dict(json.loads(stored.read_text()), str(stored)).as_dict()
        except json.JSONDecodeError as exc:
            raise ValueError(f"{stored}: not JSON ({exc})") from None
        mine = plan.as_dict()
        # the matrix may grow (more networks, settings or seeds: new run directories); what every run
        # trains with may not change, nor the lr or warm-up of a network already in the sweep
        differ = [f"{k}: {theirs.get(k)!r} there, {mine.get(k)!r} now" for k in sorted(set(mine) | set(theirs))
                  if k not in RESUME_MAY_CHANGE + MATRIX and mine.get(k) != theirs.get(k)]
        nets = {(n["model"], n["width_mult"]): n for n in theirs["networks"]}
        for n in mine["networks"]:
            was = nets.get((n["model"], n["width_mult"]), n)  # a new network: nothing to compare
            for key in sorted((set(was) | set(n)) - {"model", "width_mult"}):
                if was.get(key) != n.get(key):
                    differ.append(f"networks ({n['model']} x{n['width_mult']:g} {key}): {was.get(key)!r} there, "
                                  f"{n.get(key)!r} now")
        if differ:
            raise ValueError(f"{stored}: the sweep was started with another plan ({'; '.join(differ)}); resume with "
                             f"the same plan (networks, settings and seeds may be added) or start a new --out")
    elif stored.exists():
        raise FileExistsError(f"{stored} exists (a started sweep); pass --resume to continue it (finished runs are "
                              f"skipped) or choose another --out")
    return outdir.plan(out, COMMAND, writes=(PLAN_NAME, LOCKS), replace_own=resume)


class _Lock:
    """``locks/<run>.lock`` created exclusively; stale (its process gone, same host) locks are taken over."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.held = False

    def acquire(self) -> str | None:
        """None when acquired, else who holds it."""
        me = f"{socket.gethostname()} {os.getpid()}"
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self.path.read_text().strip() if self.path.exists() else ""
                host, _, pid = owner.partition(" ")
                if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
                    self.path.unlink(missing_ok=True)  # its process died without releasing it
                    continue
                return owner or "another process"
            with os.fdopen(fd, "w") as f:
                f.write(me + "\n")
            self.held = True
            return None
        return "another process"

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _progress(spec: RunSpec, steps_per_epoch: int, every: int, log: Callable[[str], None]) -> Callable:
    total = steps_per_epoch * spec.config.epochs
    t0, first = time.time(), [None]

    def callback(step: int, model: object) -> None:
        done = step + 1
        if first[0] is None:
            first[0] = step
        if done % every == 0 or done == total:
            rate = (time.time() - t0) / max(1, done - first[0])
            log(f"  {spec.name}: step {done}/{total} (epoch {step // steps_per_epoch + 1}/{spec.config.epochs}), "
                f"{rate:.2f} s/step, about {rate * (total - done) / 60:.0f} min left")
    return callback


def run_sweep(plan: Plan, out_dir: str | Path, *, resume: bool = False, only: list[str] | None = None,
              skip: set[str] | frozenset[str] = frozenset(), max_runs: int | None = None,
              start_before: float | None = None, progress_every: int = 100,
              log: Callable[[str], None] = lambda s: print(s, flush=True)) -> SweepReport:
    """Run the plan's runs (``only``: name patterns) in priority order into ``out_dir``.

    Finished runs (and the runs named in ``skip``: finished elsewhere) are skipped, interrupted ones
    resumed from their checkpoint, runs another sweep process holds are passed over; at most
    ``max_runs`` runs are trained in this call, and no run is started or resumed after the time
    ``start_before`` (seconds since the epoch): a sitting whose machine does not keep the sweep
    folder ends with finished runs, not partial ones.
    Stops at the first SIGINT/SIGTERM (the run's checkpoint is written; ``report.interrupted``).
    """
    from ..golden.training import plots  # noqa: F401  imported now: train() imports it lazily at a run's end, and a
    # sweep runs for days while the source tree may change under it
    out = Path(out_dir)
    runs = select(plan.runs(), only)
    sweep_dir = check_sweep_dir(plan, out, resume=resume)
    sweep_dir.apply()
    # every planned run directory at once: concurrent sweep processes then write the same marker
    sweep_dir.record(PLAN_NAME, LOCKS, *(r.name for r in plan.runs()))
    outdir.atomic_write_text(out / PLAN_NAME, json.dumps(plan.as_dict(), indent=1) + "\n")
    (out / LOCKS).mkdir(exist_ok=True)
    report = SweepReport()
    splits: dict[str, object] = {}
    trained = 0
    for k, spec in enumerate(runs, 1):
        run_dir = out / spec.name
        if spec.name in skip:
            report.actions[spec.name] = "finished-elsewhere"
            continue
        state = run_state(run_dir)
        if state == "finished":
            report.actions[spec.name] = "finished-before"
            continue
        if max_runs is not None and trained >= max_runs:
            report.actions[spec.name] = "not-reached"
            continue
        if start_before is not None and time.time() >= start_before:
            report.actions[spec.name] = "not-started-too-late"
            continue
        lock = _Lock(out / LOCKS / f"{spec.name}.lock")
        holder = lock.acquire()
        if holder is not None:
            report.actions[spec.name] = "held-elsewhere"
            log(f"[{k}/{len(runs)}] {spec.name}: being trained by {holder}; next")
            continue
        try:
            state = run_state(run_dir)  # another process may have finished it meanwhile
            if state == "finished":
                report.actions[spec.name] = "finished-before"
                continue
            if not splits:  # the full split once per process (decoding 60,000 images takes seconds)
                splits["train"] = fashion_mnist("train", samples=plan.train_samples)
                splits["test"] = fashion_mnist("test", samples=plan.test_samples)
            n = len(splits["train"])
            steps_per_epoch = n // spec.config.batch_size + (1 if n % spec.config.batch_size else 0)
            verb = "resuming" if state == "partial" else "starting"
            log(f"[{k}/{len(runs)}] {spec.name}: {verb}: {spec.command(out)}" + (" --resume" if state == "partial" else ""))
            t0 = time.time()
            metrics = train(spec.config, run_dir, resume=state == "partial",
                            train_split=splits["train"], test_split=splits["test"],
                            step_callback=_progress(spec, steps_per_epoch, progress_every, log))
            trained += 1
            report.actions[spec.name] = "resumed" if state == "partial" else "started"
            log(f"[{k}/{len(runs)}] {spec.name}: finished, test acc {metrics['summary']['test_acc']:.2f} % "
                f"after {len(metrics['epochs'])} epochs ({(time.time() - t0) / 60:.1f} min in this sitting)")
        except TrainingInterrupted as exc:
            report.actions[spec.name] = "interrupted"
            report.interrupted = exc
            log(f"[{k}/{len(runs)}] {spec.name}: {exc}; continue the sweep with --resume")
            break
        finally:
            lock.release()
    return report


def sweep_status(plan: Plan, out_dir: str | Path) -> dict[str, str]:
    """Run name -> finished / partial (epochs done) / started (no epoch yet) / missing, in plan order."""
    from .collect import epochs_done
    out = Path(out_dir)
    status = {}
    for spec in plan.runs():
        state = run_state(out / spec.name)
        if state == "partial":
            state = f"partial ({epochs_done(out / spec.name)}/{spec.config.epochs} epochs)"
        elif state == "missing" and (out / spec.name).is_dir():
            state = "started (no epoch completed yet)"
        status[spec.name] = state
    return status
