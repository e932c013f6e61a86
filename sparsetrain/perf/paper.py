"""What the papers report: gradient densities (rho_nnz after pruning) and the headline results.

All densities are the p = 90% columns (the setting the papers single out as lossless):
* SparseTrain (Dai et al. 2020), Table II: AlexNet, ResNet-18/34/152 (CIFAR-10 and ImageNet);
* Ye et al. 2019 ("Accelerating CNN training by pruning activation gradients"), Table 1:
  ResNet-50/101 on CIFAR-10;
* Ye et al. (earlier, "Sparsifying activation gradients"), Tables 1 and 3: MobileNet.
The papers report no per-layer and no activation densities; the model uses one network-wide
gradient density and ASSUMED_ACT_DENSITY for activations, and says so.
"""
from __future__ import annotations

# (model, "cifar" | "imagenet") -> (density, citation)
REPORTED_GRAD_DENSITY: dict[tuple[str, str], tuple[float, str]] = {
    ("alexnet", "cifar"): (0.01, "SparseTrain Table II, CIFAR-10, p=90%"),
    ("alexnet", "imagenet"): (0.04, "SparseTrain Table II, ImageNet, p=90%"),
    ("resnet18", "cifar"): (0.34, "SparseTrain Table II, CIFAR-10, p=90%"),
    ("resnet18", "imagenet"): (0.38, "SparseTrain Table II, ImageNet, p=90%"),
    ("resnet34", "cifar"): (0.31, "SparseTrain Table II, CIFAR-10, p=90%"),
    ("resnet34", "imagenet"): (0.37, "SparseTrain Table II, ImageNet, p=90%"),
    ("resnet50", "cifar"): (0.17, "Ye et al. 2019 Table 1, CIFAR-10, p=90%"),
    ("resnet101", "cifar"): (0.19, "Ye et al. 2019 Table 1, CIFAR-10, p=90%"),
    ("resnet152", "cifar"): (0.16, "SparseTrain Table II, CIFAR-10, p=90%"),
    ("mobilenet", "cifar"): (0.23, "Ye et al. (sparsifying) Table 1, CIFAR-10, p=90%"),
    ("mobilenet", "imagenet"): (0.28, "Ye et al. (sparsifying) Table 3, ImageNet, p=90%"),
}

# Unpruned (natural) gradient density: 1 for Conv-BN-ReLU networks, AlexNet's from Table II.
NATURAL_GRAD_DENSITY = {"alexnet": {"cifar": 0.09, "imagenet": 0.07}}

# Not reported anywhere in the papers: a typical post-ReLU activation density.
ASSUMED_ACT_DENSITY = 0.5

# SparseTrain section VI-C and Fig. 8/9 (read from the text; the figure's bars are not in the text).
PAPER_RESULTS = {
    "speedup_average": 2.7,
    "speedup_best": 4.5,          # AlexNet on CIFAR-10
    "energy_average": 2.2,
    "energy_range": (1.5, 2.8),
    "baseline_sram_share": (0.62, 0.71),
}

MODELS = ("alexnet", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "mobilenet")


def reported_grad_density(model: str, input_kind: str) -> tuple[float, str]:
    """(density, note) for a network; falls back to the CIFAR-10 figure when ImageNet is missing."""
    key = (model.lower(), input_kind)
    if key in REPORTED_GRAD_DENSITY:
        d, cite = REPORTED_GRAD_DENSITY[key]
        return d, f"gradient density {d} as reported by the papers ({cite})"
    alt = (model.lower(), "cifar")
    if alt in REPORTED_GRAD_DENSITY:
        d, cite = REPORTED_GRAD_DENSITY[alt]
        return d, (f"gradient density {d}: the papers report none for {model} on {input_kind}; "
                   f"using the CIFAR-10 figure ({cite})")
    known = sorted({m for m, _ in REPORTED_GRAD_DENSITY})
    raise ValueError(f"model = {model!r} has no reported density; allowed: {', '.join(known)} "
                     f"(or give --densities)")
