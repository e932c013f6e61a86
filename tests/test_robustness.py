"""FGSM robustness (golden.training.robustness) and the `sparsetrain robustness` command."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsetrain.cli import main
from sparsetrain.golden.training.data import STD, fashion_mnist
from sparsetrain.golden.training.robustness import (PIXEL_HI, PIXEL_LO, check_eps, fgsm_accuracy, fgsm_examples,
                                                    robustness, robustness_markdown)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def linear_model():
    """A linear classifier trained briefly on a Fashion-MNIST subset (FGSM hurts it reliably)."""
    torch.manual_seed(0)
    train = fashion_mnist("train", samples=2000, input_size=28)
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(3):
        for x, y in train.batches(100, generator=torch.Generator().manual_seed(1)):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    return model


def test_fgsm_examples_step_and_clip(linear_model, seed: int) -> None:
    split = fashion_mnist("test", samples=200, input_size=28, subset_seed=seed)
    x, y = split.images, split.labels
    linear_model.eval()
    eps = 0.1
    adv = fgsm_examples(linear_model, x, y, eps)
    assert float((adv - x).abs().max()) <= eps / STD + 1e-5
    assert float(adv.min()) >= PIXEL_LO - 1e-6 and float(adv.max()) <= PIXEL_HI + 1e-6
    # inside the pixel range the step is exactly eps in the direction of the loss gradient
    xg = x.clone().requires_grad_(True)
    nn.functional.cross_entropy(linear_model(xg), y).backward()
    inside = ((x + eps / STD * xg.grad.sign()) > PIXEL_LO) & ((x + eps / STD * xg.grad.sign()) < PIXEL_HI) & (
        xg.grad != 0)
    assert torch.allclose((adv - x)[inside], (eps / STD * xg.grad.sign())[inside], atol=1e-5)
    with torch.no_grad():
        clean = nn.functional.cross_entropy(linear_model(x), y)
        attacked = nn.functional.cross_entropy(linear_model(adv), y)
    assert float(attacked) > float(clean)


def test_fgsm_accuracy_drops_with_eps(linear_model, seed: int) -> None:
    split = fashion_mnist("test", samples=500, input_size=28, subset_seed=seed)
    acc = fgsm_accuracy(linear_model, split, [0.0, 0.05, 0.2])
    with torch.no_grad():
        plain = 100.0 * float((linear_model(split.images).argmax(1) == split.labels).float().mean())
    assert acc[0.0] == pytest.approx(plain)
    assert acc[0.0] > 50.0, "the model learned something"
    assert acc[0.2] < acc[0.05] < acc[0.0]


def test_bad_eps_is_refused() -> None:
    for bad in ([-0.1], [1.5], [float("nan")], []):
        with pytest.raises(ValueError, match="eps"):
            check_eps(bad)


def test_run_dirs_and_command(tmp_path, capsys, seed: int) -> None:
    from sparsetrain.golden.training.pruning import pruners
    from sparsetrain.golden.training.robustness import load_run_model
    from sparsetrain.golden.training.train import TrainConfig, train

    cfg = TrainConfig(model="alexnet", epochs=1, batch_size=32, train_samples=320, test_samples=100,
                      width_mult=0.125, threads=1, progress=False, seed=seed % 1000, save_model=True,
                      weight_sparsity=0.5, weight_pruning="ck", era_start=0, era_length=1)
    run = tmp_path / "ck"
    metrics = train(cfg, run)
    model, loaded_cfg = load_run_model(run)
    assert loaded_cfg.weight_sparsity == 0.5 and loaded_cfg.weight_pruning == "ck"
    before = {n: p.enabled for n, p in pruners(model).items()}
    rows = robustness([run], [0.0, 0.1])
    assert {n: p.enabled for n, p in pruners(model).items()} == before
    assert rows[0]["test_samples"] == 100
    assert rows[0]["accuracy"][0.0] == pytest.approx(metrics["summary"]["test_acc"])
    assert rows[0]["weight_sparsity"] >= 0.49
    table = robustness_markdown(rows)
    assert "ck 0.5" in table and "eps = 0.1" in table
    assert main(["robustness", str(run), "--eps", "0,0.1", "--threads", "1"]) == 0
    assert "eps = 0.1" in capsys.readouterr().out
    (run / "model.pt").unlink()
    assert main(["robustness", str(run)]) == 2
    assert "--save-model" in capsys.readouterr().err
