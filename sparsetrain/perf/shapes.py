"""Convolution layer shapes of a PyTorch network, read with forward hooks.

Any ``nn.Module`` works: every ``nn.Conv2d`` that runs in ``forward`` becomes one
``ConvShape`` (``sparsetrain.arch.geometry``, batch 1), in execution order. The network is run
on the ``meta`` device where possible, so no arithmetic is done and ResNet-152 at 224x224 takes
well under a second.
"""
from __future__ import annotations

import torch
from torch import nn

from ..arch.fixedpoint import check_param
from ..arch.geometry import ConvShape

INPUT_SIZES = {"cifar": 32, "imagenet": 224}


def conv_layer_shapes(model: nn.Module, input_size: int, in_channels: int = 3,
                      on_meta: bool = True) -> list[ConvShape]:
    """Shapes of every Conv2d that runs in ``model(x)`` for one ``in_channels x input_size^2`` sample."""
    check_param("input_size", input_size, 1, 4096)
    check_param("in_channels", in_channels, 1, 1 << 16)
    names = {m: n for n, m in model.named_modules()}
    found: list[ConvShape] = []
    device = torch.device("meta") if on_meta else torch.device("cpu")
    x = torch.zeros(1, in_channels, input_size, input_size, device=device)

    def hook(mod: nn.Conv2d, inputs, output) -> None:
        inp = inputs[0]
        name = names.get(mod, f"conv{len(found)}")
        shape = ConvShape.from_conv(mod, (1, *inp.shape[1:]), name=name, first=inp is x)
        if (shape.out_height, shape.out_width) != tuple(output.shape[2:]):
            raise ValueError(f"layer {name}: output {tuple(output.shape[2:])} differs from the square-padding "
                             f"geometry {(shape.out_height, shape.out_width)}; allowed: symmetric padding")
        found.append(shape)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        was_training = model.training
        model.eval()
        moved = model.to(device) if on_meta else model
        with torch.no_grad():
            moved(x)
        model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return found


def network_shapes(name: str, input_kind: str = "cifar", num_classes: int | None = None,
                   width_mult: float = 1.0) -> list[ConvShape]:
    """Shapes of a network of the golden model (``golden.training.networks.build_model``)."""
    if input_kind not in INPUT_SIZES:
        raise ValueError(f"input = {input_kind!r} is out of range; allowed: {', '.join(INPUT_SIZES)}")
    from ..golden.training import networks  # the golden model's zoo: one definition of every network
    size = INPUT_SIZES[input_kind]
    classes = num_classes or (10 if input_kind == "cifar" else 1000)
    with torch.device("meta"):
        model = networks.build_model(name, in_channels=3, num_classes=classes, input_size=size,
                                     width_mult=width_mult)
    return conv_layer_shapes(model, size, 3, on_meta=True)
