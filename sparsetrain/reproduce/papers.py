"""The papers' accuracy tables for the networks of the reproduction (restated from the papers).

``acc`` is the column the papers label ``acc%`` (their caption calls it the training accuracy;
the values match these networks' CIFAR-10 test accuracies), ``rho`` the density of non-zero
activation gradients (all conv layers). CIFAR-10, 300 epochs, full width; lr 0.05 (AlexNet) /
0.1, x 0.1 every 100 epochs. The p = 0.9 densities of SparseTrain Table II are also the
performance model's defaults (``sparsetrain.perf.paper.REPORTED_GRAD_DENSITY``; a test keeps them equal).
"""
from __future__ import annotations

# source -> model -> setting -> (acc %, rho_nnz); settings as RunSpec.setting ("baseline", "0.7", ...)
PAPER_ROWS: dict[str, dict[str, dict[str, tuple[float, float]]]] = {
    "SparseTrain (Dai et al. 2020) Table II, CIFAR-10": {
        "alexnet": {"baseline": (90.50, 0.09), "0.7": (90.34, 0.01), "0.8": (90.55, 0.01), "0.9": (90.31, 0.01),
                    "0.99": (89.66, 0.01)},
        "resnet18": {"baseline": (95.04, 1.0), "0.7": (95.23, 0.36), "0.8": (95.04, 0.35), "0.9": (94.91, 0.34),
                     "0.99": (94.86, 0.31)},
    },
    "Ye et al. 2019 Table 1, CIFAR-10": {
        "alexnet": {"baseline": (90.50, 0.09), "0.7": (90.34, 0.01), "0.8": (90.55, 0.01), "0.9": (90.31, 0.01),
                    "0.99": (89.66, 0.01)},
        "resnet18": {"baseline": (95.04, 1.0), "0.7": (95.23, 0.24), "0.8": (95.04, 0.22), "0.9": (94.91, 0.20),
                     "0.99": (95.18, 0.16)},
    },
    # the earlier paper ("Sparsifying activation gradients") used p = 0.85 / 0.9 / 0.95 / 0.995
    "Ye et al. (sparsifying) Table 1, CIFAR-10": {
        "mobilenet": {"baseline": (92.28, 1.0), "0.85": (92.12, 0.26), "0.9": (92.10, 0.23), "0.95": (28.71, 0.04),
                      "0.995": (67.95, 0.13)},
    },
}
