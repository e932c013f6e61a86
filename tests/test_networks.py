"""The papers' networks: CIFAR modifications, block kinds, and where the pruning layers sit."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.grad import conv2d_input, conv2d_weight

from sparsetrain.golden.training.networks import MODEL_NAMES, build_model, conv_layers
from sparsetrain.golden.training.pruning import GradientPruner, PruneConfig, pruners

torch.set_num_threads(1)  # shared machine; tiny tensors gain nothing from threads


@pytest.mark.parametrize("name,size", [(n, 32) for n in MODEL_NAMES] + [(n, 28) for n in ("alexnet", "resnet18",
                                                                                           "mobilenet")])
def test_every_network_runs_on_fashion_mnist_shapes(name: str, size: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, in_channels=1, num_classes=10, input_size=size, width_mult=0.0625,
                        prune=PruneConfig())
    out = model(torch.randn(2, 1, size, size))
    assert out.shape == (2, 10)
    kinds = {kind for _, _, kind in conv_layers(model)}
    assert kinds == ({"conv_relu"} if name == "alexnet" else {"conv_bn_relu"})


def test_cifar_modifications_of_the_papers() -> None:
    alex = conv_layers(build_model("alexnet"))
    for _, conv, _ in alex[:2]:  # first two convs: 3x3, padding 2, stride 1
        assert conv.kernel_size == (3, 3) and conv.padding == (2, 2) and conv.stride == (1, 1)
    fcs = [m for m in build_model("alexnet").modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in fcs[:2]] == [(4096, 2048), (2048, 2048)]
    for name in ("resnet18", "resnet50"):
        _, stem, _ = conv_layers(build_model(name, width_mult=0.25))[0]
        assert stem.kernel_size == (3, 3) and stem.padding == (1, 1) and stem.stride == (1, 1)
    mob = conv_layers(build_model("mobilenet", width_mult=0.25))
    assert mob[0][1].stride == (1, 1)
    depthwise = [c for _, c, _ in mob if c.groups > 1]
    assert len(depthwise) == 13 and all(c.groups == c.in_channels == c.out_channels for c in depthwise)
    depth = {n: len(conv_layers(build_model(n, width_mult=0.0625))) for n in ("resnet18", "resnet34", "resnet50")}
    # convs = 1 stem + 2 or 3 per block + 3 projection shortcuts (stages 2 to 4; stage 1 of
    # the bottleneck nets also needs one since it widens to 4x)
    assert depth == {"resnet18": 1 + 16 + 3, "resnet34": 1 + 32 + 3, "resnet50": 1 + 48 + 4}


def test_pruning_layers_serve_the_convs_the_papers_name() -> None:
    alex = build_model("alexnet", width_mult=0.125, prune=PruneConfig())
    names = [n for n, _, _ in conv_layers(alex)]
    prs = pruners(alex)
    assert list(prs) == names[1:]  # the first conv's dI is never computed
    assert all(p.target == "dI" for p in prs.values())
    res = build_model("resnet18", width_mult=0.125, prune=PruneConfig())
    prs = pruners(res)
    assert list(prs) == [n for n, _, _ in conv_layers(res)]
    assert all(p.target == "dO" for p in prs.values())
    assert len({p.seed for p in prs.values()}) == len(prs)  # independent per-layer random streams


@pytest.mark.parametrize("bad", [{"name": "vgg16"}, {"name": "alexnet", "width_mult": 0.0},
                                 {"name": "resnet18", "input_size": 4}, {"name": "resnet18", "in_channels": 0}])
def test_bad_arguments_are_rejected(bad: dict) -> None:
    name = bad.pop("name")
    with pytest.raises(ValueError, match="out of range"):
        build_model(name, **bad)


class _Taps:
    """Records each conv's input/output and their gradients, and each pruner's incoming gradient."""

    def __init__(self, model: nn.Module) -> None:
        self.io: dict[str, dict[str, torch.Tensor]] = {}
        for name, conv, _ in conv_layers(model):
            conv.register_forward_hook(self._conv_hook(name))
            conv.register_full_backward_hook(self._backward_hook)
        for name, pr in pruners(model).items():
            pr.record = True
            pr.register_forward_hook(self._pruner_hook(name))

    def _conv_hook(self, name: str):
        def hook(mod, inputs, output):
            d = self.io.setdefault(name, {})
            d["I"], d["O"] = inputs[0], output

        def backward_hook(mod, grad_inputs, grad_outputs):
            # this conv's own share of the input gradient (an input may feed a shortcut too)
            d = self.io[name]
            d["dO_seen"] = grad_outputs[0]
            if grad_inputs[0] is not None:
                d["dI"] = grad_inputs[0]
        self._backward_hook = backward_hook
        return hook

    def _pruner_hook(self, name: str):
        def hook(mod, inputs, output):
            d = self.io.setdefault(name, {})
            if inputs[0].requires_grad:
                inputs[0].register_hook(lambda g: d.__setitem__("grad_before_pruner", g))
        return hook


def _twin_models(name: str):
    torch.manual_seed(3)
    pruned = build_model(name, in_channels=1, width_mult=0.125, prune=PruneConfig(p=0.9, two_pass=True)).double()
    plain = build_model(name, in_channels=1, width_mult=0.125).double()
    plain.load_state_dict(pruned.state_dict())
    return pruned, plain


def _assert_valid_pruning(before: torch.Tensor, after: torch.Tensor, tau: float) -> None:
    big = before.abs() >= tau
    assert torch.equal(after[big], before[big])
    small = after[~big]
    assert torch.all((small == 0) | torch.isclose(small.abs(), torch.tensor(tau, dtype=small.dtype)))
    assert torch.count_nonzero(after) < torch.count_nonzero(before)


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")  # the first conv needs no dI
@pytest.mark.parametrize("name", ["alexnet", "resnet18"])
def test_gradients_are_pruned_exactly_where_the_papers_put_them(name: str, seed: int) -> None:
    pruned, plain = _twin_models(name)
    pruned.eval(), plain.eval()  # no dropout, BN in inference mode: identical forward passes
    x = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    taps = _Taps(pruned)
    out = pruned(x)
    assert torch.equal(out, plain(x))  # forward unchanged
    out.square().sum().backward()
    prs = pruners(pruned)
    for layer, conv, kind in conv_layers(pruned):
        io = taps.io[layer]
        W = conv.weight.detach()
        kw = dict(stride=conv.stride, padding=conv.padding, groups=conv.groups)
        rec = prs[layer].last if layer in prs else None
        if kind == "conv_relu":
            # dO is not pruned: the conv's weight gradient and dI come from the raw dO ...
            dO = io["dO_seen"]
            assert torch.allclose(conv.weight.grad, conv2d_weight(io["I"].detach(), W.shape, dO, **kw))
            if rec is None:
                continue
            assert torch.allclose(io["dI"], conv2d_input(io["I"].shape, W, dO, **kw))
            # ... and the pruning layer at the conv's input prunes dI before it leaves the block.
            assert torch.equal(rec.grad_in, io["dI"])
            assert torch.equal(taps.io[layer]["grad_before_pruner"], rec.grad_out)
            _assert_valid_pruning(rec.grad_in, rec.grad_out, rec.tau)
        else:
            # conv -> prune -> BN: the conv consumes the pruned dO for both dW and dI.
            assert torch.equal(io["dO_seen"], rec.grad_out)
            _assert_valid_pruning(rec.grad_in, rec.grad_out, rec.tau)
            assert torch.allclose(conv.weight.grad, conv2d_weight(io["I"].detach(), W.shape, rec.grad_out, **kw))
            if "dI" in io:
                assert torch.allclose(io["dI"], conv2d_input(io["I"].shape, W, rec.grad_out, **kw))
    assert all(isinstance(p, GradientPruner) and p.last is not None for p in prs.values())


def _relu_rms(model: nn.Module, x: torch.Tensor) -> list[float]:
    """Root-mean-square of every ReLU's output, in forward order, for one batch ``x``."""
    rms: list[float] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: rms.append(float(out.pow(2).mean().sqrt())))
             for m in model.modules() if isinstance(m, nn.ReLU)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return rms


def test_alexnet_init_keeps_the_activation_scale_through_its_relu_layers() -> None:
    # He initialisation keeps E[a^2] constant through Conv-ReLU layers; torch's default shrinks
    # it about 2x per layer, which left AlexNet (no BatchNorm) at chance (docs/reproduction.md).
    from sparsetrain.golden.training.data import fashion_mnist

    torch.manual_seed(0)
    model = build_model("alexnet", in_channels=1, width_mult=0.25).eval()  # eval: no dropout noise
    x = next(iter(fashion_mnist("train", samples=64).batches(64)))[0]
    rms = _relu_rms(model, x)
    print("ReLU output rms per layer (He init):", [f"{r:.3f}" for r in rms])
    assert len(rms) == 7  # 5 conv + 2 FC layers
    assert all(0.25 < r / rms[0] < 4.0 for r in rms), rms
    for m in model.modules():  # torch's default initialisation, for contrast: the signal fades
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.reset_parameters()
    default = _relu_rms(model, x)
    print("ReLU output rms per layer (torch default):", [f"{r:.3f}" for r in default])
    assert default[-1] / default[0] < 0.25 * rms[-1] / rms[0]


def test_alexnet_learns_within_a_few_dozen_steps_on_real_fashion_mnist() -> None:
    # The symptom that was fixed: AlexNet trained with the default settings stayed at chance (10 %)
    # for a whole short epoch. 40 steps of batch 32 (1280 real images) must clearly beat chance.
    from sparsetrain.golden.training.data import fashion_mnist
    from sparsetrain.golden.training.train import TrainConfig, train

    cfg = TrainConfig(model="alexnet", width_mult=0.125, prune=False, epochs=1, batch_size=32, seed=0,
                      train_samples=40 * 32, test_samples=500, threads=1, progress=False)
    acc = train(cfg, None, train_split=fashion_mnist("train", samples=cfg.train_samples),
                test_split=fashion_mnist("test", samples=cfg.test_samples))["summary"]["test_acc"]
    print(f"AlexNet x0.125 after 40 steps: test accuracy {acc:.1f} % (chance: 10 %)")
    assert acc > 25.0
