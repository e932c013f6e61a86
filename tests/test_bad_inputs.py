"""Bad input at every door (docs/verification.md, "Bad inputs"): each case is a command, an input
and the one line the tool must answer (exit 2, naming the file or option, no traceback), and
what must not happen (a user's file replaced, a wrong result passed as OK, an old run kept).

The golden-file cases corrupt a copy of the cached small training run (tests/conftest.py); the
N_F / write-rule cases use one tiny real training run with --n-f 3 (4 steps, about 10 s).
"""
from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import pytest

from sparsetrain import outdir
from sparsetrain.cli import main
from sparsetrain.golden.training.tensors import MANIFEST_NAME, NPZ_NAME, meta_sha256

LAYER = "features.2.conv"
TINY = ["--model", "alexnet", "--width-mult", "0.125", "--batch-size", "32", "--train-samples", "128",
        "--test-samples", "100", "--threads", "1", "--no-progress"]


def refused(capsys, argv: list[str], *needles: str) -> str:
    """Run the CLI in-process: exit 2, one error line on stderr naming every needle, no traceback."""
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    if os.environ.get("BAD_INPUT_LOG"):  # collects the answers for docs/verification.md's table
        with open(os.environ["BAD_INPUT_LOG"], "a") as log:
            log.write(f"$ sparsetrain {' '.join(map(str, argv))}\n{err}\n")
    assert rc == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"sparsetrain {argv[0]}: error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert str(n) in err, f"{n!r} not in {err!r}"
    return err


@pytest.fixture
def golden(small_golden_run, tmp_path) -> Path:
    """A private copy of the small run's golden directory (manifest.json, golden.npz)."""
    src = next((small_golden_run / "golden").iterdir())
    dst = tmp_path / "g"
    shutil.copytree(src, dst)
    return dst


def edit_manifest(gdir: Path, change, *, rechecksum: bool) -> None:
    """Apply ``change(manifest)``; ``rechecksum``: as a buggy writer would, with a valid checksum."""
    path = gdir / MANIFEST_NAME
    m = json.loads(path.read_text())
    m = change(m) or m
    if rechecksum and isinstance(m, dict):
        m["meta_sha256"] = meta_sha256(m)
    path.write_text(json.dumps(m))


def _set(path: tuple, value):
    def change(m):
        d = m
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
    return change


def _drop(path: tuple):
    def change(m):
        d = m
        for k in path[:-1]:
            d = d[k]
        del d[path[-1]]
    return change


# ---------------------------------------------------------------- golden files (check, golden verify)

MANIFEST_CASES = {
    # bad 2: a run whose recorded FIFO / tau were changed used to pass `check`
    "fifo changed": (_set(("layers", LAYER, "fifo", 0), 1e-3), False, "meta_sha256"),
    "tau changed": (_set(("layers", LAYER, "tau"), 0.5), False, "meta_sha256"),
    # bad 3: a layer kind changed conv_relu -> conv_bn_relu used to pass `check` (other density)
    "kind changed": (_set(("layers", LAYER, "kind"), "conv_bn_relu"), False, "meta_sha256"),
    "kind changed, checksum redone": (
        lambda m: m["layers"][LAYER].update(kind="conv_bn_relu", prune_target="dO"), True, "field 'kind'"),
    # poor: missing keys, wrong types, a list, metadata that disagrees with the arrays
    "no layers": (_drop(("layers",)), True, "field 'layers' is missing"),
    "no kind": (_drop(("layers", LAYER, "kind")), True, "field 'kind' is missing"),
    "no shape": (_drop(("layers", LAYER, "arrays", "W", "shape")), True, "field 'shape' is missing"),
    "stride a string": (_set(("layers", LAYER, "stride"), "1"), True, "field 'stride'"),
    "a JSON list": (lambda m: [m], False, "a JSON list"),
    "kernel vs W": (_set(("layers", LAYER, "kernel"), 5), True, "field 'kernel' = 5 does not match W"),
    "padding vs O": (_set(("layers", LAYER, "padding"), 0), True, "'padding' = 0 do not match"),
    "old version": (_set(("version",), 1), True, "version = 1"),
}


@pytest.mark.parametrize("case", list(MANIFEST_CASES))
def test_golden_manifest_errors_are_one_line_naming_file_and_field(golden, capsys, case):
    change, rechecksum, needle = MANIFEST_CASES[case]
    edit_manifest(golden, change, rechecksum=rechecksum)
    refused(capsys, ["golden", "verify", golden], golden / MANIFEST_NAME, needle)
    out = capsys.readouterr().out
    assert "checksums ok" not in out


def test_kind_is_checked_against_the_gradients_too(golden, capsys):
    """Bad 3, thoroughly: kind flipped and relu_mask dropped (a consistent but lying export): the
    pruned gradient (dI_pruned != dI) still says conv_relu."""
    import numpy as np
    with np.load(golden / NPZ_NAME) as npz:
        arrays = {k: npz[k] for k in npz.files if k != f"{LAYER}/relu_mask"}
    np.savez(golden / NPZ_NAME, **arrays)

    def change(m):
        m["layers"][LAYER].update(kind="conv_bn_relu", prune_target="dO")
        del m["layers"][LAYER]["arrays"]["relu_mask"]
    edit_manifest(golden, change, rechecksum=True)
    refused(capsys, ["check", golden, "--layer", LAYER, "--step", "forward", "--samples", "1"],
            golden / MANIFEST_NAME, "field 'kind' = 'conv_bn_relu'", "dI_pruned differs from dI")


def test_check_refuses_a_changed_run_before_simulating(golden, capsys):
    """Bad 2 through `check` itself: the changed FIFO is refused, no verdict OK."""
    edit_manifest(golden, _set(("layers", LAYER, "fifo", 0), 1e-3), rechecksum=False)
    refused(capsys, ["check", golden, "--layer", LAYER, "--step", "gta", "--samples", "1"],
            golden / MANIFEST_NAME, "meta_sha256")


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _flip(p: Path) -> None:
    b = bytearray(p.read_bytes())
    b[len(b) // 3] ^= 0xFF
    p.write_bytes(bytes(b))


FILE_CASES = {
    "npz truncated": (NPZ_NAME, _truncate, "not a readable .npz archive"),
    "npz byte flipped": (NPZ_NAME, _flip, NPZ_NAME),
    "npz is text": (NPZ_NAME, lambda p: p.write_text("hello, not an archive\n"), "not a readable .npz archive"),
    "manifest not JSON": (MANIFEST_NAME, lambda p: p.write_text("not json {"), "not JSON"),
    "manifest empty": (MANIFEST_NAME, lambda p: p.write_text(""), "not JSON"),
    "npz missing": (NPZ_NAME, lambda p: p.unlink(), "is missing"),
}


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_damaged_golden_files_are_one_line_naming_the_file(golden, capsys, case):
    name, damage, needle = FILE_CASES[case]
    damage(golden / name)
    refused(capsys, ["golden", "verify", golden], golden / name, needle)


# ---------------------------------------------------------------- check arguments

def test_check_groups_and_json_target_refused_before_the_simulation(small_golden_run, tmp_path, capsys):
    base = ["check", small_golden_run, "--layer", LAYER, "--step", "forward", "--samples", "1"]
    refused(capsys, [*base, "--groups", "0"], "--groups = 0 is out of range; allowed: 1 .. 255")
    refused(capsys, [*base, "--json", tmp_path / "missing" / "r.json"], "--json", "does not exist")
    refused(capsys, [*base, "--json", tmp_path], "--json", "is a folder")
    refused(capsys, [*base, "--layer", "features.9.conv"], "layer = 'features.9.conv'")


# ---------------------------------------------------------------- a tiny real run trained with N_F = 3

@pytest.fixture(scope="module")
def nf3_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("nf3") / "run"
    assert main(["train", *TINY, "--max-steps", "4", "--n-f", "3", "--dump-tensors", "--dump-layers", LAYER,
                 "--out", str(out)]) == 0
    return out


def test_check_refuses_a_run_the_core_cannot_reproduce(nf3_run, capsys):
    """Bad 4: a run trained with --n-f 3 used to pass on the N_F = 4 core, unpruned, verdict OK."""
    refused(capsys, ["check", nf3_run, "--layer", LAYER, "--step", "gta", "--samples", "1"],
            "N_F = 3", "core's N_F = 4", "--n-f 4")


def test_train_never_replaces_a_users_files(tmp_path, capsys):
    """Bad 5: `train --out DIR` overwrote the user's model.pt and metrics.png (it only looked for metrics.json)."""
    d = tmp_path / "mine"
    d.mkdir()
    (d / "model.pt").write_text("my weights")
    (d / "metrics.png").write_text("my plot")
    for force in ([], ["--force"]):
        refused(capsys, ["train", *TINY, "--max-steps", "2", "--out", d, *force], d / "metrics.png", "--out")
    assert (d / "model.pt").read_text() == "my weights" and (d / "metrics.png").read_text() == "my plot"
    assert sorted(p.name for p in d.iterdir()) == ["metrics.png", "model.pt"]


def test_check_refuses_two_pass_runs_and_allows_steps_without_pruning(nf3_run, small_golden_run):
    """The refusal names the parameter and only where pruning happens (GTA of a pruned conv_relu)."""
    from dataclasses import replace

    from sparsetrain.compiler import LayerData, compile_step
    from sparsetrain.compiler_check import sim_params
    from sparsetrain.golden.training.tensors import load_golden
    data = LayerData.from_golden(load_golden(small_golden_run), LAYER)
    with pytest.raises(ValueError, match="two_pass = True"):
        compile_step(replace(data, two_pass=True), "gta", sim_params(), samples=1)
    nf3 = LayerData.from_golden(load_golden(nf3_run), LAYER)
    assert nf3.n_f == 3 and nf3.fifo_full
    assert compile_step(nf3, "forward", sim_params(), samples=1).n_units > 0


@pytest.mark.parametrize("written", [["../outside"], ["/etc"], ["a/b"], "golden", [3]])
def test_a_tampered_marker_never_lets_force_remove_outside(tmp_path, capsys, written):
    d = tmp_path / "run"
    d.mkdir()
    (tmp_path / "outside").write_text("keep")
    (d / outdir.MARKER).write_text(json.dumps({"tool": "sparsetrain", "command": "train", "written": written}))
    refused(capsys, ["train", *TINY, "--max-steps", "2", "--out", d, "--force"], outdir.MARKER,
            "not a sparsetrain marker")
    assert (tmp_path / "outside").read_text() == "keep"


def test_a_folder_of_another_command_is_refused(tmp_path, capsys):
    d = tmp_path / "rtl"
    assert main(["verilog", "--block", "pe", "--param", "DW=8", "-o", str(d)]) == 0
    refused(capsys, ["train", *TINY, "--max-steps", "2", "--out", d, "--force"], "made by `sparsetrain verilog`")
    assert (d / "pe.v").is_file()


def test_train_force_removes_exactly_the_earlier_run(nf3_run, tmp_path, capsys):
    """Bad 6: `train --force` over a --dump-tensors run kept the old golden dir, so `check` tested it."""
    d = tmp_path / "run"
    shutil.copytree(nf3_run, d)
    (d / "notes.txt").write_text("the user's own notes")
    refused(capsys, ["train", *TINY, "--max-steps", "2", "--out", d], "metrics.json", "--force")
    assert (d / "golden").is_dir()  # refused: nothing touched
    assert main(["train", *TINY, "--max-steps", "2", "--out", str(d), "--force"]) == 0
    assert not (d / "golden").exists()                       # the earlier run's golden dir is gone
    assert (d / "notes.txt").read_text() == "the user's own notes"  # not the tool's: kept
    assert json.loads((d / "metrics.json").read_text())["steps"] == 2
    refused(capsys, ["check", d, "--layer", LAYER, "--step", "forward"], MANIFEST_NAME)


def test_train_dump_steps_outside_the_run_is_refused_and_leaves_nothing(tmp_path, capsys):
    """Bad 7: --dump-steps 99 on a 2-step run exited 0 with no tensors; poor: a refused train left --out."""
    d = tmp_path / "new"
    refused(capsys, ["train", *TINY, "--max-steps", "2", "--dump-tensors", "--dump-steps", "99", "--out", d],
            "dump_steps = 99 is out of range; allowed: 0 .. 1")
    refused(capsys, ["train", *TINY, "--max-steps", "2", "--dump-tensors", "--dump-layers", "features.9.conv",
                     "--out", d], "dump_layers = 'features.9.conv'")
    assert not d.exists()


def test_truncated_dataset_names_the_file(tmp_path):
    """Poor: a truncated dataset .gz gave EOFError without the file name."""
    from sparsetrain.golden.training.data import FILES, fashion_mnist
    for name in FILES["train"]:
        with gzip.open(tmp_path / name, "wb") as f:
            f.write(bytes(4096))
        _truncate(tmp_path / name)
    with pytest.raises(ValueError, match=f"{tmp_path / FILES['train'][0]}: cannot be read"):
        fashion_mnist("train", root=tmp_path)


# ---------------------------------------------------------------- verilog

def test_verilog_never_replaces_a_users_files(tmp_path, capsys):
    """Bad 8: `verilog -o DIR` silently overwrote the user's own pe.v / pe.json."""
    d = tmp_path / "rtl"
    d.mkdir()
    (d / "pe.v").write_text("// my hand-edited pe\n")
    refused(capsys, ["verilog", "--block", "pe", "-o", d], d / "pe.v", "-o")
    assert (d / "pe.v").read_text() == "// my hand-edited pe\n" and not (d / "pe.json").exists()
    # a folder the tool made: its own pe.v is regenerated, a user's file dropped in there is not replaced
    own = tmp_path / "own"
    assert main(["verilog", "--block", "pe", "--param", "DW=8", "-o", str(own)]) == 0
    assert main(["verilog", "--block", "pe", "--param", "DW=8", "-o", str(own)]) == 0
    (own / "ppu.json").write_text("{}")
    refused(capsys, ["verilog", "--block", "ppu", "-o", own], own / "ppu.json", "never replaced")
    assert (own / "ppu.json").read_text() == "{}"


def test_atomic_writes_leave_no_temporary_file_and_an_ordinary_mode(tmp_path):
    f = outdir.atomic_write_text(tmp_path / "a.txt", "one")
    outdir.atomic_write_text(f, "two")
    ordinary = tmp_path / "b.txt"
    ordinary.write_text("x")
    assert f.read_text() == "two" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]
    assert f.stat().st_mode & 0o777 == ordinary.stat().st_mode & 0o777


def test_unwritable_output_folder_is_named(tmp_path, capsys, monkeypatch):
    """Poor: an unwritable -o gave a traceback (the tests run as root, so access is refused by patching)."""
    monkeypatch.setattr(outdir.os, "access", lambda path, mode: False)
    refused(capsys, ["verilog", "--block", "pe", "-o", tmp_path / "rtl"], "-o", f"{tmp_path} is not writable")
    assert not (tmp_path / "rtl").exists()


def test_verilog_arguments(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    refused(capsys, ["verilog", "--block", "pe", "--param", "DW=32", "-o", tmp_path / "a"], "DW = 32", "4 .. 31")
    assert main(["verilog", "--list"]) == 0
    assert "(4 .. 31)" in capsys.readouterr().out  # the same range the error names
    refused(capsys, ["verilog", "-o", tmp_path / "b"], "--block is required", "pe")
    refused(capsys, ["verilog", "--block", "pe", "-o", f], "-o", "is a file")
    refused(capsys, ["verilog", "--block", "pe", "-o", f / "sub"], "-o", "is a file, not a folder")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# ---------------------------------------------------------------- perf --densities

DENSITY_CASES = {
    # bad 9: a '*' default hid a misspelt layer name
    "misspelt layer with *": ('{"*": {"act": 0.5, "grad": 0.2}, "features.2.convv": {"act": 0.4, "grad": 0.1}}',
                              ".json", "layer 'features.2.convv'"),
    # bad 10: a misspelt key silently set the gradient density to 1.0
    "misspelt key": ('{"*": {"act": 0.5, "gardient": 0.1}}', ".json", "key 'gardient' is unknown"),
    "truncated JSON": ('{"*": {"act": 0.5, "gr', ".json", "not JSON"),
    "empty JSON": ("", ".json", "not JSON"),
    "CSV non-number": ("layer,act,grad\n*,0.5,abc\n", ".csv", "row 2, column 'grad': 'abc' is not a number"),
    "out of range": ('{"*": {"act": 1.5, "grad": 0.1}}', ".json", "act = 1.5 is out of range"),
}


@pytest.mark.parametrize("case", list(DENSITY_CASES))
def test_perf_densities_errors_name_file_and_entry(tmp_path, capsys, case):
    text, suffix, needle = DENSITY_CASES[case]
    f = tmp_path / f"d{suffix}"
    f.write_text(text)
    refused(capsys, ["perf", "--model", "alexnet", "--densities", f], "densities", needle)


@pytest.mark.parametrize("text,needle", [('{"dram_pj": ', "not JSON"), ('{"dramm_pj": 3}', "key = 'dramm_pj'"),
                                         ('{"dram_pj": "x"}', "dram_pj = 'x' is not a number"),
                                         ("[1]", "a JSON list")])
def test_perf_energy_file_errors_name_the_file(tmp_path, capsys, text, needle):
    f = tmp_path / "e.json"
    f.write_text(text)
    refused(capsys, ["perf", "--model", "alexnet", "--energy", f], f"energy: {f}", needle)


def test_perf_output_targets_checked_first(tmp_path, capsys):
    refused(capsys, ["perf", "--model", "alexnet", "--json", tmp_path / "no" / "r.json"], "--json")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "summary.md").write_text("my notes")
    refused(capsys, ["perf", "--all", "--out", tmp_path / "mine"], "summary.md")
    assert (tmp_path / "mine" / "summary.md").read_text() == "my notes"


# ---------------------------------------------------------------- synth

def test_synth_output_folders_and_targets(tmp_path, capsys):
    refused(capsys, ["synth", "--block", "nope", "--workdir", tmp_path / "w"], "block = 'nope'")
    refused(capsys, ["synth", "--block", "pe", "--json", tmp_path / "no" / "r.json"], "--json", "does not exist")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "summary.md").write_text("my notes")
    refused(capsys, ["synth", "--all", "--out", tmp_path / "mine"], "--out", "summary.md")
    assert not (tmp_path / "w").exists() and (tmp_path / "mine" / "summary.md").read_text() == "my notes"


# ---------------------------------------------------------------- robustness

@pytest.mark.parametrize("metrics,model,needle", [
    ('{"config": {"model": "alexnet", "width_mult": 0.125}}', "not a state dict", "model.pt: cannot be loaded"),
    ('{"config": ', "", "metrics.json: not the metrics.json of a training run"),
    ('{"steps": 3}', "", "field 'config'"),
])
def test_robustness_run_dir_errors_name_the_file(tmp_path, capsys, metrics, model, needle):
    (tmp_path / "metrics.json").write_text(metrics)
    (tmp_path / "model.pt").write_text(model)
    refused(capsys, ["robustness", tmp_path, "--eps", "0.1", "--json", tmp_path / "r.json"], needle)
    assert not (tmp_path / "r.json").exists()


# ---------------------------------------------------------------- demo

def _earlier_demo(small_golden_run: Path, d: Path) -> None:
    """An output folder as an earlier `sparsetrain demo` leaves it: its marker, train/, report.md."""
    plan = outdir.plan(d, "demo")
    plan.apply()
    shutil.copytree(small_golden_run, d / "train")
    (d / "report.md").write_text("old report")
    plan.record("train", "report.md")


def test_demo_validates_everything_before_force_removes(small_golden_run, tmp_path, capsys):
    """Poor: `demo --force` emptied --out before validating its other arguments."""
    d = tmp_path / "demo"
    _earlier_demo(small_golden_run, d)
    refused(capsys, ["demo", "--out", d, "--force", "--train-dir", d / "train", "--layer", "features.9.conv"],
            "features.9.conv")
    refused(capsys, ["demo", "--out", d, "--force", "--samples", "-1"], "samples = -1")
    refused(capsys, ["demo", "--out", d], "report.md", "--force")
    assert (d / "report.md").read_text() == "old report" and (d / "train" / "metrics.json").is_file()
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "x.txt").write_text("mine")
    refused(capsys, ["demo", "--out", tmp_path / "user", "--force"], "x.txt")
    assert (tmp_path / "user" / "x.txt").read_text() == "mine"


def test_demo_force_keeps_the_train_dir_it_was_told_to_reuse(small_golden_run, tmp_path):
    """Bad 11: `demo --out D --force --train-dir D/train` deleted the run it was told to reuse."""
    from sparsetrain.demo import run_demo
    d = tmp_path / "demo"
    _earlier_demo(small_golden_run, d)
    result = run_demo(d, force=True, samples=1, train_dir=d / "train", run_steps=("gtw",))
    assert result.ok and (d / "train" / "metrics.json").is_file()
    assert (d / "report.md").read_text() != "old report"
