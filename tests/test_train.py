"""Training: short real runs (pruned vs unpruned), reproducibility, the CLI and its outputs."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from sparsetrain.cli import main
from sparsetrain.golden.training.data import fashion_mnist
from sparsetrain.golden.training.tensors import load_golden
from sparsetrain.golden.training.train import TrainConfig, train

torch.set_num_threads(1)

# A few hundred steps of a small AlexNet (width 1/8) on a Fashion-MNIST subset.
SHORT = TrainConfig(model="alexnet", p=0.9, epochs=1, batch_size=64, seed=1, train_samples=300 * 64,
                    test_samples=5000, max_steps=300, width_mult=0.125, threads=1, progress=False)


def test_short_pruned_run_is_within_2_points_of_unpruned_with_sparser_gradients() -> None:
    train_split = fashion_mnist("train", samples=SHORT.train_samples)
    test_split = fashion_mnist("test", samples=SHORT.test_samples)
    pruned = train(SHORT, None, train_split=train_split, test_split=test_split)
    base = train(replace(SHORT, prune=False), None, train_split=train_split, test_split=test_split)
    acc_p, acc_b = pruned["summary"]["test_acc"], base["summary"]["test_acc"]
    print(f"test accuracy: pruned {acc_p:.2f}%, unpruned {acc_b:.2f}%")
    assert acc_b > 60.0  # it really learned something (chance is 10%)
    assert abs(acc_p - acc_b) <= 2.0
    dens_p, dens_b = pruned["summary"]["grad_density"], base["summary"]["grad_density"]
    print(f"gradient density: pruned {dens_p:.3f}, unpruned {dens_b:.3f}")
    assert dens_p < 0.7 * dens_b
    for name, lay in pruned["epochs"][-1]["layers"].items():
        if "grad_density" in lay:
            assert lay["grad_density"] < lay["grad_density_before"], name
            assert lay["pruned_batches"] == SHORT.max_steps - SHORT.n_f  # FIFO full after N_F batches


def test_same_seed_gives_the_same_metrics() -> None:
    cfg = replace(SHORT, max_steps=12, train_samples=12 * 32, batch_size=32, test_samples=200, epochs=2)
    runs = [train(cfg, None) for _ in range(2)]
    other = train(replace(cfg, seed=2), None)
    assert runs[0]["epochs"] == runs[1]["epochs"]
    assert runs[0]["epochs"] != other["epochs"]
    assert len(runs[0]["epochs"]) == 1 and runs[0]["steps"] == 12  # max_steps ends the run


def test_cli_writes_metrics_plot_and_golden_tensors_and_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["train", "--model", "resnet18", "--width-mult", "0.0625", "--epochs", "2", "--train-samples", "96",
            "--test-samples", "50", "--batch-size", "32", "--n-f", "2", "--p", "0.7", "--threads", "1",
            "--no-progress", "--dump-tensors", "--dump-layers", "layer2.0.cb1.conv", "--out", str(out)]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (out / "metrics.png").stat().st_size > 1000
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1] and metrics["steps"] == 6
    lay = metrics["epochs"][1]["layers"]["layer2.0.cb1.conv"]
    assert lay["target"] == "dO" and 0 < lay["grad_density"] < lay["grad_density_before"]
    assert 0 < lay["activation_density"] <= 1 and len(lay["fifo"]) == 2
    g = load_golden(out)  # the default dump step is the last one
    assert g.manifest["run"]["step"] == 5 and g.layers == ["layer2.0.cb1.conv"]
    assert g.layer("layer2.0.cb1.conv")["stride"] == 2
    assert main(["golden", "verify", str(out)]) == 0
    assert main(argv) == 2  # exists: refused without --force
    assert main([*argv, "--force", "--no-prune"]) == 0


@pytest.mark.parametrize("bad", [{"p": 1.5}, {"epochs": 0}, {"model": "vgg"}, {"n_f": 0}, {"lr": -1.0},
                                 {"lr_schedule": "linear"}])
def test_bad_training_config_is_rejected(bad: dict) -> None:
    with pytest.raises(ValueError, match="out of range"):
        TrainConfig(**bad)


def test_cosine_schedule_anneals_the_lr_over_the_epochs_and_step_decays_it(tmp_path: Path) -> None:
    import math

    out = tmp_path / "cos"
    argv = ["train", "--model", "alexnet", "--width-mult", "0.0625", "--epochs", "4", "--train-samples", "32",
            "--test-samples", "20", "--batch-size", "32", "--lr", "0.04", "--lr-schedule", "cosine", "--threads", "1",
            "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["lr_schedule"] == "cosine"
    lrs = [e["lr"] for e in metrics["epochs"]]
    assert lrs == pytest.approx([0.04 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)])  # 0.04 .. 0.0059
    cfg = TrainConfig(model="alexnet", width_mult=0.0625, epochs=3, batch_size=32, train_samples=32, test_samples=20,
                      lr=0.04, lr_decay_epochs=2, threads=1, progress=False)
    assert [e["lr"] for e in train(cfg, None)["epochs"]] == pytest.approx([0.04, 0.04, 0.004])  # the default: step


def test_warmup_ramps_the_lr_linearly_then_follows_the_schedule_and_resumes_exactly(tmp_path: Path,
                                                                                  monkeypatch) -> None:
    """Every optimizer step's lr: (step + 1) / warmup x the cosine lr of its epoch; the lr recorded per
    epoch (and the chained cosine) stays the scheduler's; a run interrupted in the warm-up and resumed
    equals an uninterrupted one."""
    import math

    from sparsetrain.golden.training.train import INTERRUPT_ENV, TrainingInterrupted

    seen: list[float] = []
    real_step = torch.optim.SGD.step

    def spy(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.SGD, "step", spy)
    # 4 steps per epoch, 3 epochs, warm-up over 6 steps (into the second epoch)
    cfg = TrainConfig(model="alexnet", width_mult=0.0625, epochs=3, batch_size=16, train_samples=64, test_samples=20,
                      lr=0.04, lr_schedule="cosine", warmup_steps=6, threads=1, progress=False)
    fresh = train(cfg, tmp_path / "fresh")
    cosine = [0.04 * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(3)]
    want = [cosine[s // 4] * min(1.0, (s + 1) / 6) for s in range(12)]
    assert seen == pytest.approx(want, rel=1e-12)
    assert [e["lr"] for e in fresh["epochs"]] == pytest.approx(cosine, rel=1e-12)
    plain = train(replace(cfg, warmup_steps=0), None)
    assert [e["loss"] for e in plain["epochs"]] != [e["loss"] for e in fresh["epochs"]]  # the warm-up acts

    seen.clear()
    monkeypatch.setenv(INTERRUPT_ENV, "3")  # in the warm-up, in the first epoch
    with pytest.raises(TrainingInterrupted):
        train(cfg, tmp_path / "resumed")
    monkeypatch.delenv(INTERRUPT_ENV)
    resumed = train(cfg, tmp_path / "resumed", resume=True)
    assert seen == pytest.approx(want, rel=1e-12)
    for a, b in zip(fresh["epochs"], resumed["epochs"], strict=True):
        assert (a["loss"], a["train_acc"], a["test_acc"], a["lr"]) == (b["loss"], b["train_acc"], b["test_acc"], b["lr"])
    with pytest.raises(ValueError, match="warmup_steps = -1 is out of range"):
        TrainConfig(warmup_steps=-1)
