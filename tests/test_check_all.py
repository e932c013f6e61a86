"""`sparsetrain check RUN_DIR --all`: every conv layer and step of a real (tiny) training run on
the core RTL, bit-exact, with the summary table, JSON and plot; layers the core cannot run
listed with the compiler's reason; the same verdicts from parallel processes and from a local
2-worker Ray cluster as from the plain local run."""
from __future__ import annotations

import json

import pytest

from sparsetrain.check_all import check_all, plan, write_summary
from sparsetrain.cli import main
from sparsetrain.check import sim_params

LAYERS = ["features.2.conv", "features.4.conv"]


@pytest.fixture(scope="module")
def local_summary(small_golden_run):
    return check_all(small_golden_run, samples=1, progress=False)


def test_every_layer_and_step_bit_exact_with_table_json_and_plot(local_summary, tmp_path):
    s = local_summary
    assert [(r.layer, r.step) for r in s.results] == [(layer, st) for layer in LAYERS for st in ("forward", "gta", "gtw")]
    for r in s.results:
        assert r.status == "bit-exact", (r.layer, r.step, r.reason)
        assert r.rtl_cycles == r.model_cycles > 0 and r.dense_cycles > 0
        assert r.speedup == pytest.approx(r.dense_cycles / r.rtl_cycles)
        assert 0 < r.utilisation <= 1 and r.sim_cycles_per_s > 0
        assert 0 < r.useful_utilisation < r.utilisation      # architecture 12.7: some, fewer than busy
    paths = write_summary(s, tmp_path)
    md = paths["markdown"].read_text()
    assert md.count("| bit-exact |") == 6 and "features.4.conv | gtw" in md and "| useful utilisation |" in md
    data = json.loads(paths["json"].read_text())
    assert data["ok"] and len(data["results"]) == 6
    assert all(x["useful_utilisation"] == x["report"]["useful_utilisation"] > 0 for x in data["results"])
    assert paths["plot"].stat().st_size > 1000
    with pytest.raises(ValueError, match="an earlier `sparsetrain check` run"):
        write_summary(s, tmp_path)


def test_layers_the_core_cannot_run_are_listed_with_the_reason(small_golden_run):
    s = check_all(small_golden_run, steps=["forward"], params=sim_params(k_max=2), progress=False)
    assert [r.status for r in s.results] == ["not run", "not run"]
    assert all("K = 3 is out of range; allowed: 1 .. 2 (K_MAX of this core)" in r.reason for r in s.results)
    assert "not run: layer features.2.conv" in s.markdown()


def test_bad_layer_or_step_names_the_allowed_values(small_golden_run):
    with pytest.raises(ValueError, match="layers = nope not in the run; allowed: features.2.conv"):
        plan(small_golden_run, layers=["nope"])
    with pytest.raises(ValueError, match="steps = 'back' is out of range"):
        plan(small_golden_run, steps=["back"])
    with pytest.raises(ValueError, match="jobs = 0 is out of range"):
        check_all(small_golden_run, jobs=0)


def test_parallel_processes_give_the_local_verdicts(small_golden_run, local_summary):
    s = check_all(small_golden_run, samples=1, jobs=2, progress=False)
    assert s.verdicts() == local_summary.verdicts()
    assert [r.rtl_cycles for r in s.results] == [r.rtl_cycles for r in local_summary.results]


def test_local_two_worker_ray_cluster_gives_the_local_verdicts(small_golden_run, local_summary):
    import ray  # noqa: F401  (the optional extra that make setup installs)
    s = check_all(small_golden_run, samples=1, jobs=2, ray_address="local", progress=False)
    assert s.backend == "ray local"
    assert s.verdicts() == local_summary.verdicts()
    assert [r.rtl_cycles for r in s.results] == [r.rtl_cycles for r in local_summary.results]


def test_cli_all_writes_the_summary_and_refuses_to_replace_it(small_golden_run, tmp_path, capsys):
    out = tmp_path / "summary"
    args = ["check", str(small_golden_run), "--all", "--layers", "features.4.conv", "--steps", "gtw",
            "--samples", "1", "--out", str(out)]
    assert main(args) == 0
    assert "| features.4.conv | gtw | bit-exact |" in capsys.readouterr().out
    assert (out / "summary.json").exists() and (out / "speedup.png").exists()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "an earlier `sparsetrain check` run" in err and "--force" in err and "Traceback" not in err
    assert main(args + ["--force"]) == 0
    # a user's file of a name the summary uses is never replaced, --force included (checked before simulating)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "summary.md").write_text("my notes\n")
    assert main(args[:-1] + [str(mine), "--force"]) == 2
    assert "holds files" in capsys.readouterr().err and (mine / "summary.md").read_text() == "my notes\n"


def test_bare_verilator_rate_of_the_same_programs_is_reported(small_golden_run):
    """--bare: the step's programs also run on the bare-Verilator harness; its rate is in the table."""
    s = check_all(small_golden_run, layers=["features.4.conv"], steps=["gta"], samples=1, bare=True, progress=False)
    (r,) = s.results
    assert r.status == "bit-exact" and r.bare_cycles_per_s > 0
    assert f"{r.bare_cycles_per_s:,.0f} (" in s.markdown()
