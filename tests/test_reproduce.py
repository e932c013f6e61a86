"""The reproduction sweep (sparsetrain.reproduce): plan, resumable runner, collector, table generator.

One tiny real sweep (AlexNet x1/16, 256 Fashion-MNIST training images, 2 epochs of 4 steps,
baseline and p = 0.9, seeds 0 and 1) is interrupted in its first run, resumed, and re-run;
the collector's JSON and the generated table are checked against the run directories and
against means and standard deviations computed here.
"""
from __future__ import annotations

import json
import re
import shlex
import statistics
from dataclasses import replace
from pathlib import Path

import pytest

from sparsetrain.golden.training.train import INTERRUPT_ENV, METRICS_NAME, train
from sparsetrain.reproduce import collect as rcollect
from sparsetrain.reproduce import table as rtable
from sparsetrain.reproduce.plan import load_plan, plan_from_dict
from sparsetrain.reproduce.runner import run_state, run_sweep

pytestmark = pytest.mark.xdist_group("reproduce")

TINY = {"format": "sparsetrain-reproduction-plan", "version": 1,
        "networks": [{"model": "alexnet", "width_mult": 0.0625, "warmup_steps": 3}],
        "settings": ["baseline", 0.9], "seeds": [0, 1], "epochs": 2, "batch_size": 64, "lr_schedule": "cosine",
        "train_samples": 256, "test_samples": 200, "threads": 1}
STEPS_PER_EPOCH = 4
INTERRUPT_AT = 6  # in the second epoch of the first run


def test_plan_orders_runs_seed_then_setting_then_network():
    plan = plan_from_dict({**TINY, "networks": [{"model": "resnet18", "width_mult": 0.25},
                                                {"model": "alexnet", "width_mult": 0.5, "lr": 0.01}],
                           "settings": ["baseline", 0.9, 0.7], "seeds": [0, 1]})
    names = [r.name for r in plan.runs()]
    assert names[:4] == ["resnet18-x0.25-baseline-s0", "alexnet-x0.5-baseline-s0", "resnet18-x0.25-p0.9-s0",
                         "alexnet-x0.5-p0.9-s0"]
    assert len(names) == 12 and len(set(names)) == 12 and names[-1] == "alexnet-x0.5-p0.7-s1"
    base = plan.runs()[0].config
    assert not base.prune and base.lr_schedule == "cosine" and base.epochs == 2 and base.threads == 1
    assert plan.runs()[3].config.lr == 0.01 and plan.runs()[3].config.p == 0.9


@pytest.mark.parametrize("field, value, says", [
    ("epochs", 0, "epochs = 0 is out of range"), ("settings", ["baseline", 1.0], "settings = 1.0"),
    ("networks", [{"model": "vgg", "width_mult": 1}], "model = 'vgg'"), ("seeds", [0, 0], "seeds"),
    ("lr_schedule", "linear", "lr_schedule = 'linear'"), ("train_samples", 70000, "train_samples = 70000"),
    ("bogus", 1, "unknown field 'bogus'"),
    ("networks", [{"model": "alexnet", "width_mult": 0.5, "warmup_steps": -1}], "networks[0].warmup_steps = -1")])
def test_plan_rejects_bad_fields_naming_them(field, value, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        plan_from_dict({**TINY, field: value})


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """The tiny sweep: interrupted in run 1, resumed, then re-run (nothing left to do)."""
    import os

    root = tmp_path_factory.mktemp("reproduce")
    plan = plan_from_dict(TINY)
    out = root / "sweep"
    logs: list[str] = []
    os.environ[INTERRUPT_ENV] = str(INTERRUPT_AT)
    try:
        first = run_sweep(plan, out, log=logs.append)
    finally:
        del os.environ[INTERRUPT_ENV]
    partial = rcollect.collect(plan, out)
    second = run_sweep(plan, out, resume=True, log=logs.append)
    mtimes = {r.name: (out / r.name / METRICS_NAME).stat().st_mtime_ns for r in plan.runs()}
    third = run_sweep(plan, out, resume=True, log=logs.append)
    results = rcollect.collect(plan, out)
    return {"plan": plan, "out": out, "first": first, "partial": partial, "second": second, "third": third,
            "mtimes": mtimes, "results": results, "root": root}


def test_an_interrupted_run_is_resumed_and_finished_runs_are_skipped(sweep):
    plan, out = sweep["plan"], sweep["out"]
    names = [r.name for r in plan.runs()]
    first, second, third = sweep["first"], sweep["second"], sweep["third"]
    assert first.interrupted is not None and first.actions == {names[0]: "interrupted"}
    assert second.actions == {names[0]: "resumed", **{n: "started" for n in names[1:]}}
    assert third.actions == {n: "finished-before" for n in names} and third.interrupted is None
    # the third call trained nothing: every metrics.json is the one the second call wrote
    assert {n: (out / n / METRICS_NAME).stat().st_mtime_ns for n in names} == sweep["mtimes"]
    m = json.loads((out / names[0] / METRICS_NAME).read_text())
    assert m["resumed_at_steps"] == [INTERRUPT_AT] and m["steps"] == 2 * STEPS_PER_EPOCH


def test_the_resumed_run_equals_an_uninterrupted_one(sweep):
    spec = sweep["plan"].runs()[0]
    fresh = train(spec.config, sweep["root"] / "uninterrupted")
    resumed = json.loads((sweep["out"] / spec.name / METRICS_NAME).read_text())
    for a, b in zip(fresh["epochs"], resumed["epochs"], strict=True):
        assert (a["test_acc"], a["train_acc"], a["loss"]) == (b["test_acc"], b["train_acc"], b["loss"])
        assert a["layers"] == b["layers"]


def test_a_started_sweep_needs_resume_and_the_same_plan(sweep):
    plan, out = sweep["plan"], sweep["out"]
    with pytest.raises(FileExistsError, match="pass --resume"):
        run_sweep(plan, out)
    other = plan_from_dict({**TINY, "epochs": 3})
    with pytest.raises(ValueError, match=r"epochs: 2 there, 3 now"):
        run_sweep(other, out, resume=True)
    lr = plan_from_dict({**TINY, "networks": [{"model": "alexnet", "width_mult": 0.0625, "lr": 0.05}]})
    with pytest.raises(ValueError, match=r"alexnet x0.0625 lr"):
        run_sweep(lr, out, resume=True)
    warm = plan_from_dict({**TINY, "networks": [{"model": "alexnet", "width_mult": 0.0625, "warmup_steps": 5}]})
    with pytest.raises(ValueError, match=r"alexnet x0.0625 warmup_steps\): 3 there, 5 now"):
        run_sweep(warm, out, resume=True)
    with pytest.raises(FileNotFoundError, match="--resume needs the folder of a started sweep"):
        run_sweep(plan, sweep["root"] / "never-started", resume=True)


def test_a_resumed_sweep_may_grow_by_a_seed(sweep, tmp_path):
    import shutil

    out = tmp_path / "sweep"
    shutil.copytree(sweep["out"], out)
    grown = plan_from_dict({**TINY, "seeds": [0, 1, 2], "settings": ["baseline"]})
    rep = run_sweep(grown, out, resume=True, log=lambda s: None)
    assert rep.actions == {"alexnet-x0.0625-baseline-s0": "finished-before",
                           "alexnet-x0.0625-baseline-s1": "finished-before", "alexnet-x0.0625-baseline-s2": "started"}
    assert json.loads((out / "plan.json").read_text())["seeds"] == [0, 1, 2]


def test_collect_marks_partial_and_missing_runs(sweep):
    runs = sweep["partial"]["runs"]
    assert [r["status"] for r in runs] == ["partial", "missing", "missing", "missing"]
    assert runs[0]["epochs_done"] == 1 and len(runs[0]["epochs"]) == 1
    assert runs[1]["epochs_done"] == 0 and runs[1]["final_test_acc"] is None
    names = [r["name"] for r in runs]
    assert rtable.not_finished(sweep["partial"]) == (f"Runs not finished yet: partial: `{names[0]}` (1/2 epochs); "
                                                     f"not started: `{names[1]}`, `{names[2]}`, `{names[3]}`.")
    assert rtable.not_finished(sweep["results"]) == "Runs not finished yet: none."


def test_collect_refuses_a_run_folder_trained_with_other_settings(sweep, tmp_path):
    """The collector's "same run" is resume's: every TrainConfig field but RESUME_MAY_CHANGE, so a field
    no list names (momentum here) is compared too."""
    import shutil
    out = tmp_path / "sweep"
    shutil.copytree(sweep["out"], out)
    plan = sweep["plan"]
    name = plan.runs()[1].name
    metrics = json.loads((out / name / METRICS_NAME).read_text())
    metrics["config"]["threads"] = 2  # how it was scheduled: the same run
    (out / name / METRICS_NAME).write_text(json.dumps(metrics))
    assert [r["status"] for r in rcollect.collect(plan, out)["runs"]] == ["finished"] * 4
    metrics["config"]["momentum"] = 0.5
    (out / name / METRICS_NAME).write_text(json.dumps(metrics))
    with pytest.raises(ValueError, match=rf"{name}: momentum = 0.5 there, the plan says 0.9; allowed: the run"):
        rcollect.collect(plan, out)


def test_collected_records_equal_the_run_directories(sweep):
    from sparsetrain.commands import train as train_cmd
    import argparse

    out = sweep["out"]
    for spec, rec in zip(sweep["plan"].runs(), sweep["results"]["runs"], strict=True):
        m = json.loads((out / spec.name / METRICS_NAME).read_text())
        assert rec["status"] == "finished" and rec["epochs_done"] == 2
        assert rec["final_test_acc"] == m["epochs"][-1]["test_acc"]
        assert [e["test_acc"] for e in rec["epochs"]] == [e["test_acc"] for e in m["epochs"]]
        last = m["epochs"][-1]["layers"]
        grads = [v["grad_density"] for v in last.values() if v.get("grad_density") is not None]
        d_o = [v["dO_density"] for v in last.values() if "dO_density" in v]
        assert rec["grad_density"] == pytest.approx(sum(grads) / len(grads), rel=1e-12)
        assert rec["dO_density"] == pytest.approx(sum(d_o) / len(d_o), rel=1e-12)
        assert set(rec["layers"]) == set(last)
        if spec.config.prune:
            assert rec["grad_density"] < 0.9  # pruned
        else:
            assert rec["grad_density"] > 0.95  # AlexNet's dI, unpruned
        # the recorded command is exactly this run: parsed by `sparsetrain train`, it gives its config
        argv = shlex.split(rec["command"])
        assert argv[:2] == ["sparsetrain", "train"]
        p = argparse.ArgumentParser()
        train_cmd.add_arguments(p)
        args = p.parse_args(argv[2:])
        assert Path(args.out) == out / spec.name
        assert replace(train_cmd.config_from_args(args), progress=False) == spec.config


def _row(md: str, network: str, label: str) -> list[str]:
    for line in md.splitlines():
        cols = [c.strip() for c in line.strip("|").split("|")]
        if len(cols) > 2 and cols[0] == network and cols[1] == label:
            return cols
    raise AssertionError(f"no row {network} / {label} in\n{md}")


def test_table_numbers_are_the_json_means_and_stds(sweep, tmp_path):
    results = json.loads(json.dumps(sweep["results"]))  # as written to and read from the file
    path = rcollect.write_results(results, tmp_path / "r.json")
    results = rcollect.load_results(path)
    md = rtable.accuracy_table(results)
    accs = {}
    for label, setting in (("baseline", "baseline"), ("p = 0.9", "0.9")):
        runs = [r for r in results["runs"] if r["setting"] == setting]
        a = [r["final_test_acc"] for r in runs]
        accs[setting] = sum(a) / len(a)
        std = (sum((x - accs[setting]) ** 2 for x in a) / (len(a) - 1)) ** 0.5
        g = sum(r["grad_density"] for r in runs) / len(runs)
        cols = _row(md, "alexnet x0.0625", label)
        assert cols[2] == "2 of 2" and cols[3] == "s0: 2/2, s1: 2/2"
        assert cols[4] == f"{accs[setting]:.2f}" and cols[5] == f"{std:.2f}" and cols[7] == f"{g:.3f}"
    assert _row(md, "alexnet x0.0625", "p = 0.9")[6] == f"{accs['0.9'] - accs['baseline']:+.2f}"
    assert "90.31 / 0.01" in _row(md, "alexnet x0.0625", "p = 0.9")[9]  # the papers' row


def test_one_seed_has_no_std_and_partial_runs_are_marked(sweep):
    md = rtable.accuracy_table(sweep["partial"])
    cols = _row(md, "alexnet x0.0625", "baseline")
    assert cols[2] == "1 of 2" and cols[3] == "s0: 1/2, s1: 0/2" and cols[5] == "–"
    assert cols[4] == f"{sweep['partial']['runs'][0]['final_test_acc']:.2f}"
    # a partial run's accuracy is never set against a finished one: no difference before both have finished
    assert [r["status"] for r in sweep["partial"]["runs"]][:2] == ["partial", "missing"]
    assert _row(md, "alexnet x0.0625", "p = 0.9")[6] == "–"
    # the difference pairs seeds: with the baseline finished at seeds 0 and 1 and p = 0.9 at seed 1 only,
    # it is seed 1's difference, not p = 0.9's seed 1 against the baseline's mean
    res = json.loads(json.dumps(sweep["results"]))
    p09 = [r for r in res["runs"] if r["setting"] == "0.9"]
    p09[0].update(status="partial")
    by = {(r["setting"], r["seed"]): r["final_test_acc"] for r in res["runs"]}
    got = _row(rtable.accuracy_table(res), "alexnet x0.0625", "p = 0.9")[6]
    assert p09[0]["seed"] == 0 and got == f"{by[('0.9', 1)] - by[('baseline', 1)]:+.2f}"
    # the mean and std of a cell with a finished run leave its partial runs out
    p09[0].update(final_test_acc=by[("0.9", 1)] - 40.0, epochs_done=1)
    cols = _row(rtable.accuracy_table(res), "alexnet x0.0625", "p = 0.9")
    assert cols[2] == "1 of 2" and cols[4] == f"{by[('0.9', 1)]:.2f}" and cols[5] == "–"
    assert "not decided yet" in "\n".join(rtable.verdicts(sweep["partial"]))


def test_a_plan_with_one_seed_says_it_cannot_decide(sweep):
    res = json.loads(json.dumps(sweep["results"]))
    res["runs"] = [r for r in res["runs"] if r["seed"] == 0]  # a complete one-seed sweep
    assert all(r["status"] == "finished" for r in res["runs"])
    (line,) = rtable.verdicts(res)
    assert "cannot be decided" in line and "needs at least 2" in line


def test_update_doc_replaces_only_the_generated_section(sweep, tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(f"intro\n{rtable.BEGIN}\nold\n{rtable.END}\noutro\n")
    rtable.update_doc(doc, rtable.render(sweep["results"]))
    text = doc.read_text()
    assert text.startswith("intro\n" + rtable.BEGIN) and text.endswith(rtable.END + "\noutro\n")
    assert "old" not in text and rtable.accuracy_table(sweep["results"]) in text
    (tmp_path / "bad.md").write_text("no markers\n")
    with pytest.raises(ValueError, match="marker lines"):
        rtable.update_doc(tmp_path / "bad.md", "x")
    paths = rtable.plot_curves(sweep["results"], tmp_path / "rp")
    assert [p.name for p in paths] == ["rp_accuracy.png", "rp_density.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


def test_baseline_bars_and_the_budget_check_come_from_the_results(sweep, tmp_path):
    results = json.loads(json.dumps(sweep["results"]))
    base = [r for r in results["runs"] if r["setting"] == "baseline"]
    mean = statistics.fmean(r["final_test_acc"] for r in base)
    line = rtable.baseline_bars(results)[0]
    assert line.startswith(f"* alexnet x0.0625 baseline: {mean:.2f} %")
    assert line.endswith("bar 88 %: " + ("reached." if mean >= 88 else "not reached."))
    assert rtable.baseline_bars(sweep["partial"])[0].endswith("so far (not final).")
    for r in base:
        r["final_test_acc"] = 88.0 + r["seed"]  # mean 88.5
    assert rtable.baseline_bars(results)[0].endswith("bar 88 %: reached.")
    base[0]["final_test_acc"] = 80.0
    assert rtable.baseline_bars(results)[0].endswith("not reached.")
    # the reference: seed 1's baseline trained for longer (here: the same run with a higher accuracy)
    ref = json.loads(json.dumps(sweep["results"]))
    ref["plan"]["epochs"] = 6
    ref["runs"] = [dict(r, epochs_planned=6, final_test_acc=r["final_test_acc"] + 1.25) for r in ref["runs"]
                   if r["setting"] == "baseline" and r["seed"] == 1]
    mine = [r for r in sweep["results"]["runs"] if r["setting"] == "baseline" and r["seed"] == 1][0]
    md = rtable.budget_table(sweep["results"], ref)
    cols = _row(md, "alexnet x0.0625", "baseline")
    assert cols[2] == "1" and cols[3] == f"{mine['final_test_acc']:.2f} (2/2)"
    assert cols[4] == f"{mine['final_test_acc'] + 1.25:.2f} (2/6)" and cols[5] == "+1.25"
    text = rtable.render(sweep["results"], reference=ref, reference_name="ref.json")
    assert "from `ref.json` (plan: 6 epochs" in text and md in text
    assert "Epoch budget check" not in rtable.render(sweep["results"])
    paths = rtable.plot_curves(sweep["results"], tmp_path / "rp", reference=ref)
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


def test_cli_table_adds_the_budget_check_from_a_reference_file(sweep, tmp_path, capsys):
    from sparsetrain.cli import main

    path = rcollect.write_results(sweep["results"], tmp_path / "r.json")
    assert main(["reproduce", "table", "--json", str(path), "--reference", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"Epoch budget check, from `{path}`" in out and "| +0.00 |" in out
    assert main(["reproduce", "table", "--json", str(path), "--reference", str(tmp_path / "none.json")]) == 2
    assert "is not a file" in capsys.readouterr().err


def test_perf_table_uses_the_measured_densities(sweep):
    from sparsetrain.perf.densities import table_from_metrics

    c = [c for c in rtable.cells(sweep["results"]) if c.setting == "0.9"][0]
    t = rtable.density_table(c)
    for name, lay in t.per_layer.items():
        acts = [r["layers"][name]["activation_density"] for r in c.done]
        assert lay.act == pytest.approx(statistics.fmean(acts), rel=1e-12)
    # the dI targets (AlexNet) are the seeds' mean pruned dI
    for name, v in t.di_target.items():
        assert v == pytest.approx(statistics.fmean(r["layers"][name]["grad_density"] for r in c.done), rel=1e-12)
    assert table_from_metrics  # the same reader `sparsetrain perf --densities RUN_DIR` uses
    md = rtable.perf_table(sweep["results"])
    assert len([l for l in md.splitlines() if l.startswith("| alexnet")]) == 2


def test_paper_rows_agree_with_the_performance_models_defaults():
    from sparsetrain.perf.paper import REPORTED_GRAD_DENSITY
    from sparsetrain.reproduce.papers import PAPER_ROWS

    t2 = PAPER_ROWS["SparseTrain (Dai et al. 2020) Table II, CIFAR-10"]
    for model in ("alexnet", "resnet18"):
        assert t2[model]["0.9"][1] == REPORTED_GRAD_DENSITY[(model, "cifar")][0]


def test_cli_refuses_a_started_sweep_without_resume_and_names_bad_plan_fields(sweep, tmp_path, capsys):
    from sparsetrain.cli import main

    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(TINY))
    assert load_plan(plan_path) == sweep["plan"]
    assert main(["reproduce", "run", "--plan", str(plan_path), "--out", str(sweep["out"])]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main(["reproduce", "status", "--plan", str(plan_path), "--out", str(sweep["out"])]) == 0
    assert capsys.readouterr().out.count("finished") == 4
    plan_path.write_text(json.dumps({**TINY, "batch_size": 0}))
    assert main(["reproduce", "run", "--plan", str(plan_path), "--out", str(tmp_path / "s")]) == 2
    assert "batch_size = 0 is out of range" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_the_committed_plans_load_and_cover_the_matrix():
    repo = Path(__file__).resolve().parent.parent
    data = repo / "docs" / "data"
    plans = [data / "reproduction_plan.json", data / "reproduction_plan_fullwidth.json"]
    for path in plans:
        plan = load_plan(path)
        runs = plan.runs()
        assert set(plan.settings) == {"baseline", "0.7", "0.9", "0.99"} and plan.seeds == (0, 1, 2)
        assert len(runs) == 12 * len(plan.networks) == len({r.name for r in runs})
        assert plan.train_samples is None and plan.test_samples is None  # the full 60,000 / 10,000 split
    # the budget check trains some of the sweep's runs, with everything but the epochs the same, for longer
    sweep, longer = load_plan(plans[0]), load_plan(data / "reproduction_plan_15ep.json")
    assert longer.epochs > sweep.epochs
    assert {r.name for r in longer.runs()} <= {r.name for r in sweep.runs()}
    # the same networks and lrs; the warm-up may differ (the 15-epoch AlexNet run predates it, and the
    # generated budget table says so: test_budget_table_names_a_difference_beyond_the_epochs)
    assert {(n.model, n.width_mult, n.lr) for n in longer.networks} <= {(n.model, n.width_mult, n.lr)
                                                                          for n in sweep.networks}
    assert replace(longer, epochs=sweep.epochs, networks=sweep.networks, settings=sweep.settings, seeds=sweep.seeds,
                   note="") == replace(sweep, note="")


def test_a_run_directory_without_a_checkpoint_counts_as_started(tmp_path):
    from sparsetrain.reproduce.runner import sweep_status

    plan = plan_from_dict(TINY)
    first = plan.runs()[0].name
    (tmp_path / first).mkdir()  # what a run that has not finished its first epoch leaves
    res = rcollect.collect(plan, tmp_path)
    assert [r["status"] for r in res["runs"]] == ["started", "missing", "missing", "missing"]
    assert sweep_status(plan, tmp_path)[first] == "started (no epoch completed yet)"
    assert run_state(tmp_path / first) == "missing"  # the runner starts it afresh
    assert f"started, no epoch completed yet: `{first}`" in rtable.not_finished(res)


def test_the_committed_doc_is_generated_from_the_committed_results():
    """docs/reproduction.md's generated section is exactly what `reproduce table` makes of the committed
    results files: every cell of the table comes from docs/data/reproduction.json."""
    repo = Path(__file__).resolve().parent.parent
    data = repo / "docs" / "data"
    results = rcollect.load_results(data / "reproduction.json")
    reference = rcollect.load_results(data / "reproduction_15ep.json")
    assert results["plan"] == load_plan(data / "reproduction_plan.json").as_dict()
    assert reference["plan"] == load_plan(data / "reproduction_plan_15ep.json").as_dict()
    text = (repo / "docs" / "reproduction.md").read_text()
    section = text[text.index(rtable.BEGIN):text.index(rtable.END) + len(rtable.END)]
    assert section == rtable.render(results, reference=reference), (
        "docs/reproduction.md is stale (its table also holds the performance model's speedups); regenerate it: "
        "sparsetrain reproduce table --json docs/data/reproduction.json --reference docs/data/reproduction_15ep.json "
        "--doc docs/reproduction.md --plots docs/img/reproduction")


def test_a_sweep_continues_on_a_machine_without_its_run_folders(sweep, tmp_path, capsys):
    """The committed results file stands in for run folders that are gone: the runner skips its
    finished runs and the collector keeps them, but only those the plan still trains the same way."""
    from sparsetrain.cli import main

    plan, results = sweep["plan"], sweep["results"]
    names = [r.name for r in plan.runs()]
    kept, dropped = rcollect.finished_with_plan(plan, results)
    assert set(kept) == set(names) and dropped == []
    rep = run_sweep(plan, tmp_path / "fresh", skip=set(kept), log=lambda s: None)
    assert rep.actions == {n: "finished-elsewhere" for n in names}
    assert not any((tmp_path / "fresh" / n).exists() and any((tmp_path / "fresh" / n).iterdir()) for n in names)
    empty = rcollect.collect(plan, tmp_path / "fresh")
    assert [r["status"] for r in empty["runs"]] == ["missing"] * 4
    assert rcollect.merge_previous(empty, results, plan) == (names, [])
    assert empty["runs"] == results["runs"]
    # a plan that trains the runs differently (another warm-up) keeps none of them
    other = plan_from_dict({**TINY, "networks": [{"model": "alexnet", "width_mult": 0.0625, "warmup_steps": 5}]})
    assert rcollect.finished_with_plan(other, results) == ({}, names)
    # the CLI: collect keeps by default, --replace does not; run --results skips
    plan_path, res_path = tmp_path / "plan.json", tmp_path / "results.json"
    plan_path.write_text(json.dumps(TINY))
    rcollect.write_results(results, res_path)
    assert main(["reproduce", "collect", "--plan", str(plan_path), "--out", str(tmp_path / "fresh"),
                 "--json", str(res_path)]) == 0
    assert "kept from the earlier" in capsys.readouterr().out
    assert rcollect.load_results(res_path)["runs"] == results["runs"]
    assert main(["reproduce", "run", "--plan", str(plan_path), "--out", str(tmp_path / "fresh2"),
                 "--results", str(res_path)]) == 0
    assert "4 finished-elsewhere" in capsys.readouterr().out
    assert main(["reproduce", "collect", "--plan", str(plan_path), "--out", str(tmp_path / "fresh"),
                 "--json", str(res_path), "--replace"]) == 0
    assert [r["status"] for r in rcollect.load_results(res_path)["runs"]] == ["missing"] * 4


def test_budget_table_names_a_difference_beyond_the_epochs(sweep):
    results = sweep["results"]
    longer = json.loads(json.dumps(results))
    for r in longer["runs"]:
        r["command"] = r["command"].replace("--epochs 2", "--epochs 6").replace(" --warmup-steps 3", "")
    text = rtable.budget_table(results, longer)
    assert text.count("differ in more than the epochs") == 4
    assert "`--warmup-steps` 3 in this sweep, absent in the longer run" in text
    same = json.loads(json.dumps(results))
    for r in same["runs"]:
        r["command"] = r["command"].replace("--epochs 2", "--epochs 6")
    assert "differ" not in rtable.budget_table(results, same)


def test_no_run_starts_after_the_deadline(tmp_path, capsys):
    import datetime
    import time

    from sparsetrain.cli import main
    from sparsetrain.commands.reproduce import parse_time

    plan = plan_from_dict(TINY)
    rep = run_sweep(plan, tmp_path / "late", start_before=time.time() - 1, log=lambda s: None)
    assert set(rep.actions.values()) == {"not-started-too-late"}
    assert not any((tmp_path / "late").glob("alexnet-*/*"))
    noon = datetime.datetime(2026, 12, 2, 9, 30)
    assert parse_time("11:40", noon) == datetime.datetime(2026, 12, 2, 11, 40).timestamp()
    assert parse_time("2026-12-03T01:05", noon) == datetime.datetime(2026, 12, 3, 1, 5).timestamp()
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(TINY))
    assert main(["reproduce", "run", "--plan", str(plan_path), "--out", str(tmp_path / "s"),
                 "--no-start-after", "25:99"]) == 2
    assert "no_start_after = '25:99' is out of range" in capsys.readouterr().err


def test_the_generated_section_names_its_results_file_and_the_warm_up(sweep):
    text = rtable.render(sweep["results"], results_name="runs/mine.json")
    assert "Generated from `runs/mine.json` (4 planned runs: 4 finished" in text
    assert "test images; linear lr warm-up: alexnet x0.0625 3 steps)" in text
    res = json.loads(json.dumps(sweep["results"]))
    res["plan"]["networks"][0].pop("warmup_steps")
    assert "warm-up" not in rtable.render(res)


def test_mobilenets_lr_01_runs_are_the_plans_commands_at_lr_01_and_the_doc_quotes_them():
    """docs/reproduction.md's MobileNet finding: the runs it quotes are the main plan's MobileNet runs with
    only the lr changed (0.1, before the plan moved to 0.05), their records are in their own results
    file, and the doc's numbers are that file's."""
    repo = Path(__file__).resolve().parent.parent
    data = repo / "docs" / "data"
    main = {r.name: r for r in load_plan(data / "reproduction_plan.json").runs()}
    old = load_plan(data / "reproduction_plan_mobilenet_lr01.json")
    for run in old.runs():
        planned = main[run.name]
        assert run.config.lr == 0.1 and planned.config.lr == 0.05
        assert replace(run.config, lr=planned.config.lr) == planned.config
    results = rcollect.load_results(data / "reproduction_mobilenet_lr01.json")
    assert results["plan"] == old.as_dict()
    assert [r["name"] for r in results["runs"]] == [r.name for r in old.runs()]
    finished = [r for r in results["runs"] if r["status"] == "finished"]
    assert len(finished) == 5
    # the lr-0.1 records are not the main results file's: a plan change dropped them there
    current = {r["name"]: r for r in rcollect.load_results(data / "reproduction.json")["runs"]}
    assert all(current[r["name"]]["command"] != r["command"] for r in results["runs"])
    doc = (repo / "docs" / "reproduction.md").read_text()
    for r in finished:
        assert f"**{r['final_test_acc']:.2f}**" in doc, r["name"]
