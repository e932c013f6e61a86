"""Convolution layer shapes of a PyTorch network, read with forward hooks.

Any ``nn.Module`` works: every ``nn.Conv2d`` that runs in ``forward`` becomes one
``LayerShape``, in execution order. The network is run on the ``meta`` device where possible,
so no arithmetic is done and ResNet-152 at 224x224 takes well under a second.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..arch.fixedpoint import check_param

INPUT_SIZES = {"cifar": 32, "imagenet": 224}


@dataclass(frozen=True)
class LayerShape:
    """One convolution of one sample (batch 1): what the performance model needs."""

    name: str
    c_in: int
    c_out: int
    h_in: int
    w_in: int
    h_out: int
    w_out: int
    k: int
    stride: int
    pad: int
    groups: int
    first: bool = False  # reads the network input: no GTA step (no gradient of the image)

    def __post_init__(self) -> None:
        check_param("K", self.k, 1, 16)
        check_param("stride", self.stride)
        check_param("pad", self.pad, 0, self.k - 1)
        if self.groups not in (1, self.c_in):
            raise ValueError(f"groups = {self.groups} is out of range; allowed: 1 or C = {self.c_in}")
        for nm in ("c_in", "c_out", "h_in", "w_in", "h_out", "w_out"):
            check_param(nm, getattr(self, nm), 1, 1 << 20)

    @property
    def c_per_group(self) -> int:
        """Input channels summed into one output channel (C/groups)."""
        return self.c_in // self.groups

    @property
    def f_per_group(self) -> int:
        return self.c_out // self.groups

    def macs(self) -> int:
        """Dense multiply-accumulates of the forward step (padding excluded)."""
        from .decompose import valid_taps
        ty = valid_taps(self.h_in, self.h_out, self.k, self.stride, self.pad)
        tx = valid_taps(self.w_in, self.w_out, self.k, self.stride, self.pad)
        return self.c_out * self.c_per_group * ty * tx

    def as_dict(self) -> dict:
        return asdict(self)


def _square(v, what: str, name: str) -> int:
    if isinstance(v, tuple):
        if len(set(v)) != 1:
            raise ValueError(f"{name}: {what} = {v} is out of range; allowed: square (equal in both dimensions)")
        v = v[0]
    return int(v)


def conv_layer_shapes(model: nn.Module, input_size: int, in_channels: int = 3,
                      on_meta: bool = True) -> list[LayerShape]:
    """Shapes of every Conv2d that runs in ``model(x)`` for one ``in_channels x input_size^2`` sample."""
    check_param("input_size", input_size, 1, 4096)
    check_param("in_channels", in_channels, 1, 1 << 16)
    names = {m: n for n, m in model.named_modules()}
    found: list[LayerShape] = []
    device = torch.device("meta") if on_meta else torch.device("cpu")
    x = torch.zeros(1, in_channels, input_size, input_size, device=device)

    def hook(mod: nn.Conv2d, inputs, output) -> None:
        inp = inputs[0]
        name = names.get(mod, f"conv{len(found)}")
        if mod.padding_mode != "zeros":
            raise ValueError(f"{name}: padding_mode = {mod.padding_mode!r} is out of range; allowed: 'zeros'")
        k = _square(mod.kernel_size, "kernel_size", name)
        if mod.padding == "valid":
            pad = 0
        elif mod.padding == "same":
            pad = (k - 1) // 2
        else:
            pad = _square(mod.padding, "padding", name)
        if _square(mod.dilation, "dilation", name) != 1:
            raise ValueError(f"{name}: dilation = {mod.dilation} is out of range; allowed: 1")
        found.append(LayerShape(
            name=name, c_in=int(inp.shape[1]), c_out=int(output.shape[1]),
            h_in=int(inp.shape[2]), w_in=int(inp.shape[3]),
            h_out=int(output.shape[2]), w_out=int(output.shape[3]),
            k=k, stride=_square(mod.stride, "stride", name),
            pad=pad, groups=int(mod.groups), first=inp is x))

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
                   width_mult: float = 1.0) -> list[LayerShape]:
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
