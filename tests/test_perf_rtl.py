"""Model vs RTL: every row op of small real layers runs on the PE RTL (Verilator); the cycles
per op and per layer step (through the section 10 schedule) must agree within 5 %."""
from __future__ import annotations

import os

import numpy as np

from sparsetrain.arch.schedule import ArchParams
from sparsetrain.perf.shapes import LayerShape
from sparsetrain.sim_tb.perf_check import compare_with_rtl, markdown_table, random_layer_tensors

SEED = int(os.environ.get("SPARSETRAIN_SEED", "2024"))
TOLERANCE = 0.05

LAYERS = [
    # name, C, F, H, W, K, S, P, act density, grad density
    ("conv3x3", 2, 3, 8, 12, 3, 1, 1, 0.5, 0.3),
    ("conv3x3_s2", 2, 2, 9, 11, 3, 2, 1, 0.6, 0.4),
    ("conv1x1", 3, 2, 4, 9, 1, 1, 0, 0.4, 0.0),  # all-zero gradients: marker-only rows
]


def test_model_matches_pe_rtl():
    print(f"SPARSETRAIN_SEED={SEED}")
    rng = np.random.default_rng(SEED)
    layers = []
    for name, c, f, h, w, k, s, p, d_in, d_grad in LAYERS:
        ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        shape = LayerShape(name, c, f, h, w, ho, wo, k, s, p, 1)
        layers.append((shape, random_layer_tensors(shape, rng, d_in, d_grad)))
    rows = compare_with_rtl(layers, ArchParams(groups=2))
    print(markdown_table(rows))
    assert len(rows) == 3 * len(LAYERS)
    for r in rows:
        assert r.stalls == 0, r
        assert r.op_max_error <= TOLERANCE, r
        assert r.error <= TOLERANCE, r
