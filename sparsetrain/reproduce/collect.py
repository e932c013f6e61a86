"""Collect a reproduction sweep into one results file (``docs/data/reproduction.json``).

Each planned run becomes one record: its exact command, its status (finished; partial, with
the epochs its last checkpoint holds; missing), accuracy per epoch, and the pruned-gradient
and dO densities per layer (last completed epoch) and averaged over layers (per epoch and
last). A partial run's epochs come from its ``checkpoint.pt`` (written after every epoch),
so a sweep can be collected while it is still running.

Run folders live on the machine that trained them; the results file is what is committed. So a
collection keeps the earlier results file's finished runs whose folders are not in this sweep
folder (:func:`merge_previous`), provided they were trained with exactly the command this plan
gives them: a sweep can be continued on a fresh machine, and a plan change drops the runs it
invalidates.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from .. import outdir
from ..golden.training.train import CHECKPOINT_NAME, METRICS_NAME, settings_differ
from .plan import Plan, RunSpec
from .runner import run_state

RESULTS_FORMAT, RESULTS_VERSION = "sparsetrain-reproduction-results", 1
LAYER_KEYS = ("target", "grad_density_before", "grad_density", "dO_density", "activation_density")


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def layer_means(layers: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Unweighted means over layers: pruned gradient (layers with a pruner), dO and activations (every conv)."""
    def of(key: str) -> float | None:
        return _mean([lay[key] for lay in layers.values() if lay.get(key) is not None])
    return {"grad_density": of("grad_density"), "grad_density_before": of("grad_density_before"),
            "dO_density": of("dO_density"), "activation_density": of("activation_density")}


def _run_epochs(run_dir: Path, state: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(epoch records, extra facts) of a finished run (metrics.json) or a partial one (checkpoint.pt)."""
    if state == "finished":
        m = json.loads((run_dir / METRICS_NAME).read_text())
        return m["epochs"], {"wall_s": m.get("wall_s"), "resumed_at_steps": m.get("resumed_at_steps", []),
                             "steps": m.get("steps"), "config": m.get("config")}
    if state == "partial":
        import torch  # only partial runs need it (their checkpoint)
        ckpt = torch.load(run_dir / CHECKPOINT_NAME, map_location="cpu", weights_only=False)
        m = ckpt["metrics"]
        return m["epochs"], {"wall_s": m.get("wall_s"), "resumed_at_steps": m.get("resumed_at_steps", []),
                             "steps": ckpt["data"]["step"], "config": ckpt["config"]}
    return [], {}


def epochs_done(run_dir: str | Path) -> int:
    """Completed epochs of a run directory (0 when it has none)."""
    run_dir = Path(run_dir)
    return len(_run_epochs(run_dir, run_state(run_dir))[0])


def run_record(spec: RunSpec, out_dir: str | Path) -> dict[str, Any]:
    run_dir = Path(out_dir) / spec.name
    state = run_state(run_dir)
    epochs, extra = _run_epochs(run_dir, state)
    if state == "missing" and run_dir.is_dir():
        state = "started"  # training (or stopped) before its first epoch's checkpoint
    if extra.get("config") is not None:
        # the run directory must hold this plan's run, not another one left in the folder (the rule of resume)
        differ = settings_differ(spec.config, extra["config"])
        if differ:
            key, (theirs, mine) = next(iter(differ.items()))
            raise ValueError(f"{run_dir}: {key} = {theirs!r} there, the plan says {mine!r}"
                             + (f" (and {len(differ) - 1} more field(s))" if len(differ) > 1 else "")
                             + "; allowed: the run directories the sweep of this plan wrote")
    per_epoch = []
    for e in epochs:
        means = layer_means(e["layers"])
        per_epoch.append({"epoch": e["epoch"] + 1, "lr": e.get("lr"), "loss": e["loss"], "train_acc": e["train_acc"],
                          "test_loss": e["test_loss"], "test_acc": e["test_acc"], **means})
    last_layers = {name: {k: lay.get(k) for k in LAYER_KEYS if k in lay} for name, lay in epochs[-1]["layers"].items()} \
        if epochs else {}
    last = per_epoch[-1] if per_epoch else {}
    return {"name": spec.name, "model": spec.network.model, "width_mult": spec.network.width_mult,
            "setting": spec.setting, "p": spec.p, "seed": spec.seed, "status": state,
            "epochs_planned": spec.config.epochs, "epochs_done": len(epochs),
            "command": spec.command(out_dir), "resume_command": spec.command(out_dir) + " --resume",
            "wall_s": extra.get("wall_s"), "steps": extra.get("steps"),
            "resumed_at_steps": extra.get("resumed_at_steps", []),
            "final_test_acc": last.get("test_acc"), "final_train_acc": last.get("train_acc"),
            "grad_density": last.get("grad_density"), "dO_density": last.get("dO_density"),
            "activation_density": last.get("activation_density"),
            "epochs": per_epoch, "layers": last_layers}


def _command_out(command: str) -> str | None:
    """The sweep folder of a recorded run command (the parent of its ``--out``)."""
    args = shlex.split(command)
    return str(Path(args[args.index("--out") + 1]).parent) if "--out" in args[:-1] else None


def finished_with_plan(plan: Plan, results: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """(run name -> record of the results file's finished runs trained with exactly the command ``plan``
    gives them, names of its finished runs trained otherwise)."""
    specs = {spec.name: spec for spec in plan.runs()}
    kept, dropped = {}, []
    for rec in results.get("runs", []):
        if rec.get("status") != "finished":
            continue
        spec = specs.get(rec.get("name"))
        out = _command_out(rec.get("command", ""))
        if spec is not None and out is not None and rec["command"] == spec.command(out):
            kept[spec.name] = rec
        else:
            dropped.append(rec.get("name", "?"))
    return kept, dropped


def merge_previous(results: dict[str, Any], previous: dict[str, Any], plan: Plan) -> tuple[list[str], list[str]]:
    """Put ``previous``'s finished runs (same plan command) in place of this collection's records of the
    same runs that are not finished (their folders are elsewhere). Returns (kept, dropped) run names;
    dropped: finished runs of ``previous`` that the plan now trains differently."""
    done, dropped = finished_with_plan(plan, previous)
    kept = []
    for i, rec in enumerate(results["runs"]):
        if rec["status"] != "finished" and rec["name"] in done:
            results["runs"][i] = done[rec["name"]]
            kept.append(rec["name"])
    return kept, dropped


def collect(plan: Plan, out_dir: str | Path) -> dict[str, Any]:
    """Every planned run's record (finished, partial, started without a checkpoint, or missing), in plan order."""
    return {"format": RESULTS_FORMAT, "version": RESULTS_VERSION, "sweep_dir": str(out_dir), "plan": plan.as_dict(),
            "definitions": {
                "final_test_acc": "test accuracy (%) on the test split after the last completed epoch",
                "grad_density": "fraction of non-zeros of the gradient the pruning layers act on, after pruning "
                                "(dI of Conv-ReLU layers, dO of Conv-BN-ReLU layers; unpruned for the baseline), "
                                "over the epoch's steps, unweighted mean over the layers with a pruning layer",
                "dO_density": "fraction of non-zeros of each conv's output gradient as the conv consumes it, "
                              "over the epoch's steps, unweighted mean over every conv",
                "layers": "per conv layer, the last completed epoch"},
            "runs": [run_record(spec, out_dir) for spec in plan.runs()]}


def write_results(results: dict[str, Any], path: str | Path) -> Path:
    return outdir.atomic_write_text(path, json.dumps(results, indent=1) + "\n")


def load_results(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"results = {str(p)!r} is not a file; allowed: the JSON `sparsetrain reproduce collect` wrote")
    obj = json.loads(p.read_text())
    if not isinstance(obj, dict) or obj.get("format") != RESULTS_FORMAT:
        raise ValueError(f"{p}: format = {obj.get('format') if isinstance(obj, dict) else None!r}; "
                         f"allowed: {RESULTS_FORMAT!r}")
    if obj.get("version") != RESULTS_VERSION:
        raise ValueError(f"{p}: version = {obj.get('version')!r}; allowed: {RESULTS_VERSION}")
    return obj
