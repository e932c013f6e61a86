"""The papers' networks with their CIFAR modifications, with pruning layers placed as the papers say.

* AlexNet (Ye et al. 2019, section 6.1): first two convs 3x3, padding 2, stride 1; FC-1 and
  FC-2 resized to 4096x2048 and 2048x2048 (4096 = 256 channels x 4 x 4 after the last pool at
  32x32 input). Conv-ReLU blocks: the pruning layer sits at each conv's input and prunes dI
  (not before the first conv, whose dI is never computed).
* ResNet-18/34/50/101/152: first conv 3x3, padding 1, stride 1, no max-pool; 4x4 average
  pooling before FC-1 (an adaptive average pool, which is exactly 4x4 at 32x32 input).
  Conv-BN-ReLU blocks: the pruning layer sits between every conv and its BN and prunes dO
  (shortcut 1x1 convs included).
* MobileNet (v1; Ye et al., earlier paper, section 4.1): first conv stride 1, last pooling a
  2x2 average pool (adaptive, exactly 2x2 at 32x32 input). Conv-BN-ReLU blocks, dO pruned.

``width_mult`` scales every channel count (and AlexNet's FC widths) for quick CPU runs.
Every conv carries its block kind in the attribute ``sparsetrain_kind``.

AlexNet is initialised as He et al. 2015 ("Delving deep into rectifiers"; ``kaiming_init``):
torch's default (uniform, variance 1 / (3 fan_in)) shrinks the signal about 2x per
Conv-ReLU layer, so with no BatchNorm the logits of an 8-layer AlexNet hardly depend on the
input at initialisation and the first conv's gradients are ~10^4 times smaller than the last
layer's; a short run then ends at chance at any learning rate (docs/reproduction.md). ResNet and
MobileNet keep torch's default: their BatchNorm restores the scale after every conv.
"""
from __future__ import annotations


import torch
from torch import nn

from ...arch.fixedpoint import check_param
from .pruning import PRUNE_TARGETS, GradientPruner, PruneConfig

MODEL_NAMES = ("alexnet", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "mobilenet")
KIND_ATTR = "sparsetrain_kind"
LOGIT_INIT_STD = 0.01  # AlexNet's last linear layer (kaiming_init)


class _PrunerFactory:
    """Hands out pruning layers (or identities when pruning is off) with consecutive seeds."""

    def __init__(self, config: PruneConfig | None) -> None:
        self.config = config
        self.count = 0

    def __call__(self, target: str) -> nn.Module:
        if self.config is None:
            return nn.Identity()
        pruner = GradientPruner(self.config, target=target, layer_index=self.count)
        self.count += 1
        return pruner


def _conv(cin: int, cout: int, k: int, *, stride: int = 1, padding: int = 0, groups: int = 1,
          bias: bool, kind: str) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=padding, groups=groups, bias=bias)
    setattr(conv, KIND_ATTR, kind)
    return conv


def _scaled(channels: int, width_mult: float) -> int:
    return max(1, int(round(channels * width_mult)))


class ConvReLU(nn.Module):
    """[prune dI] -> conv -> ReLU, the AlexNet block."""

    def __init__(self, cin: int, cout: int, k: int, padding: int, make_pruner: _PrunerFactory | None) -> None:
        super().__init__()
        self.prune = make_pruner("dI") if make_pruner is not None else nn.Identity()
        self.conv = _conv(cin, cout, k, padding=padding, bias=True, kind="conv_relu")
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(self.prune(x)))


class ConvBN(nn.Module):
    """conv -> [prune dO] -> BN (the ReLU, if any, belongs to the enclosing block)."""

    def __init__(self, cin: int, cout: int, k: int, *, stride: int = 1, padding: int = 0, groups: int = 1,
                 make_pruner: _PrunerFactory) -> None:
        super().__init__()
        self.conv = _conv(cin, cout, k, stride=stride, padding=padding, groups=groups, bias=False,
                          kind="conv_bn_relu")
        self.prune = make_pruner("dO")
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.prune(self.conv(x)))


class AlexNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, input_size: int, width_mult: float,
                 make_pruner: _PrunerFactory) -> None:
        super().__init__()
        c = [_scaled(n, width_mult) for n in (64, 192, 384, 256, 256)]
        fc = _scaled(2048, width_mult)
        self.features = nn.Sequential(
            ConvReLU(in_channels, c[0], 3, 2, None),
            nn.MaxPool2d(2),
            ConvReLU(c[0], c[1], 3, 2, make_pruner),
            nn.MaxPool2d(2),
            ConvReLU(c[1], c[2], 3, 1, make_pruner),
            ConvReLU(c[2], c[3], 3, 1, make_pruner),
            ConvReLU(c[3], c[4], 3, 1, make_pruner),
            nn.MaxPool2d(2),
        )
        flat = _feature_numel(self.features, in_channels, input_size)
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(flat, fc), nn.ReLU(),
            nn.Dropout(0.5), nn.Linear(fc, fc), nn.ReLU(),
            nn.Linear(fc, num_classes),
        )
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def kaiming_init(model: nn.Module) -> None:
    """He initialisation for a ReLU network without BatchNorm (AlexNet's Conv-ReLU blocks).

    Every conv and hidden linear layer gets N(0, 2 / fan_in) weights and zero biases, which keeps the
    second moment of the activations constant from layer to layer through the ReLUs (He et al.
    2015, eq. 10). The last linear layer (the logits, no ReLU after it) gets N(0, 0.01^2): with
    He's scale there the initial logits would have an rms of about 4 (dropout and max-pooling
    raise the second moment), an initial loss near 7 instead of ln 10, and the first steps
    would be spent undoing them.
    """
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for m in layers[:-1]:
        nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
    nn.init.normal_(layers[-1].weight, std=LOGIT_INIT_STD)
    for m in layers:
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int, make_pruner: _PrunerFactory) -> None:
        super().__init__()
        self.cb1 = ConvBN(cin, planes, 3, stride=stride, padding=1, make_pruner=make_pruner)
        self.cb2 = ConvBN(planes, planes, 3, padding=1, make_pruner=make_pruner)
        self.shortcut = _shortcut(cin, planes, stride, make_pruner)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.cb2(self.relu(self.cb1(x))) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, make_pruner: _PrunerFactory) -> None:
        super().__init__()
        out = planes * self.expansion
        self.cb1 = ConvBN(cin, planes, 1, make_pruner=make_pruner)
        self.cb2 = ConvBN(planes, planes, 3, stride=stride, padding=1, make_pruner=make_pruner)
        self.cb3 = ConvBN(planes, out, 1, make_pruner=make_pruner)
        self.shortcut = _shortcut(cin, out, stride, make_pruner)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.cb1(x))
        y = self.relu(self.cb2(y))
        return self.relu(self.cb3(y) + self.shortcut(x))


def _shortcut(cin: int, cout: int, stride: int, make_pruner: _PrunerFactory) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return ConvBN(cin, cout, 1, stride=stride, make_pruner=make_pruner)


RESNET_SPECS: dict[str, tuple[type, tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
    "resnet152": (Bottleneck, (3, 8, 36, 3)),
}


class ResNet(nn.Module):
    def __init__(self, block: type, depths: tuple[int, ...], in_channels: int, num_classes: int,
                 width_mult: float, make_pruner: _PrunerFactory) -> None:
        super().__init__()
        width = _scaled(64, width_mult)
        self.stem = ConvBN(in_channels, width, 3, padding=1, make_pruner=make_pruner)
        self.relu = nn.ReLU()
        stages, cin = [], width
        for i, depth in enumerate(depths):
            planes = _scaled(64 * 2**i, width_mult)
            blocks = []
            for j in range(depth):
                blocks.append(block(cin, planes, 2 if (i > 0 and j == 0) else 1, make_pruner))
                cin = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.stem(x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


# MobileNet v1 after the stem: (output channels, stride) of each depthwise-separable block.
MOBILENET_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


class MobileNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, width_mult: float, make_pruner: _PrunerFactory) -> None:
        super().__init__()
        cin = _scaled(32, width_mult)
        layers: list[nn.Module] = [ConvBN(in_channels, cin, 3, padding=1, make_pruner=make_pruner), nn.ReLU()]
        for cout, stride in MOBILENET_BLOCKS:
            cout = _scaled(cout, width_mult)
            layers += [ConvBN(cin, cin, 3, stride=stride, padding=1, groups=cin, make_pruner=make_pruner), nn.ReLU(),
                       ConvBN(cin, cout, 1, make_pruner=make_pruner), nn.ReLU()]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def _feature_numel(features: nn.Module, in_channels: int, input_size: int) -> int:
    with torch.no_grad():
        out = features(torch.zeros(1, in_channels, input_size, input_size))
    if out.shape[-1] < 1:
        raise ValueError(f"input_size = {input_size} is out of range for this network; allowed: >= 8")
    return int(out[0].numel())


def check_model_name(name: str) -> str:
    if name not in MODEL_NAMES:
        raise ValueError(f"model = {name!r} is out of range; allowed: {', '.join(MODEL_NAMES)}")
    return name


def build_model(name: str, *, in_channels: int = 3, num_classes: int = 10, input_size: int = 32,
                width_mult: float = 1.0, prune: PruneConfig | None = None) -> nn.Module:
    """One of MODEL_NAMES, with pruning layers when ``prune`` is given (identities otherwise)."""
    check_model_name(name)
    check_param("in_channels", in_channels, 1, 4096)
    check_param("num_classes", num_classes, 2, 100000)
    check_param("input_size", input_size, 8, 4096)
    if not (isinstance(width_mult, (int, float)) and 0.0 < width_mult <= 8.0):
        raise ValueError(f"width_mult = {width_mult!r} is out of range; allowed: 0 < width_mult <= 8")
    make_pruner = _PrunerFactory(prune)
    model: nn.Module
    if name == "alexnet":
        model = AlexNet(in_channels, num_classes, input_size, width_mult, make_pruner)
    elif name == "mobilenet":
        model = MobileNet(in_channels, num_classes, width_mult, make_pruner)
    else:
        block, depths = RESNET_SPECS[name]
        model = ResNet(block, depths, in_channels, num_classes, width_mult, make_pruner)
    _name_pruners(model)
    return model


def _name_pruners(model: nn.Module) -> None:
    """Give each pruning layer the qualified name of the conv it serves (its sibling ``conv``)."""
    for block_name, block in model.named_modules():
        prune, conv = getattr(block, "prune", None), getattr(block, "conv", None)
        if isinstance(prune, GradientPruner) and isinstance(conv, nn.Conv2d):
            prune.layer_name = f"{block_name}.conv" if block_name else "conv"


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d, str]]:
    """Every nn.Conv2d of ``model`` in definition order: (qualified name, module, block kind).

    kind is "conv_relu" or "conv_bn_relu" (a conv without the tag counts as conv_relu when no
    BN follows it, which only happens for convs added from outside these networks).
    """
    return [(name, m, getattr(m, KIND_ATTR, "conv_relu"))
            for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def prune_target(kind: str) -> str:
    """Which gradient the papers prune for a block kind: dI for conv_relu, dO for conv_bn_relu."""
    if kind not in PRUNE_TARGETS:
        raise ValueError(f"kind = {kind!r} is out of range; allowed: {', '.join(PRUNE_TARGETS)}")
    return PRUNE_TARGETS[kind]


