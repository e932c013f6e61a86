"""Golden tensor files (docs/architecture.md section 9) from a real pruned training run."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.grad import conv2d_input, conv2d_weight

from sparsetrain.golden.training.pruning import threshold_coefficient
from sparsetrain.golden.training.tensors import (FORMAT, MANIFEST_NAME, NPZ_NAME, TENSOR_NAMES, LayerTensors,
                                                 export_golden, load_golden, meta_sha256)

torch.set_num_threads(1)


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).double()


def test_small_golden_run_has_stride1_padded_relu_layers_with_active_pruning(small_golden_run: Path) -> None:
    g = load_golden(small_golden_run)
    assert g.manifest["format"] == FORMAT and g.manifest["run"]["p"] == 0.9
    assert len(g.layers) >= 2
    for name in g.layers:
        lay = g.layer(name)
        assert lay["kind"] == "conv_relu" and lay["stride"] == 1 and lay["padding"] >= 1
        assert lay["prune_target"] == "dI" and lay["pruned"] and lay["fifo_full"]
        assert set(g.arrays[name]) == set(TENSOR_NAMES)


def test_golden_arrays_are_consistent_with_each_other(small_golden_run: Path) -> None:
    g = load_golden(small_golden_run)
    p, est = g.manifest["run"]["p"], g.manifest["run"]["estimator"]
    for name in g.layers:
        lay, a = g.layer(name), g.arrays[name]
        kw = dict(stride=lay["stride"], padding=lay["padding"], groups=lay["groups"])
        I, W, dO = _t(a["I"]), _t(a["W"]), _t(a["dO"])
        O = torch.nn.functional.conv2d(I, W, _t(a["b"]), **kw)
        assert torch.allclose(O, _t(a["O"]), rtol=1e-4, atol=1e-5 * float(O.abs().max()))
        assert np.array_equal(a["relu_mask"], (a["O"] > 0).astype(np.float32))
        assert np.all(a["dO"][a["relu_mask"] == 0] == 0)  # dO has passed the ReLU
        scale = float(dO.abs().max()) * 1e-4
        dW = conv2d_weight(I, W.shape, dO, **kw)
        assert torch.allclose(dW, _t(a["dW"]), rtol=1e-3, atol=scale * float(I.abs().max()))
        assert torch.allclose(dO.sum((0, 2, 3)), _t(a["db"]), rtol=1e-3, atol=scale)
        dI = conv2d_input(I.shape, W, dO, **kw)
        assert torch.allclose(dI, _t(a["dI"]), rtol=1e-3, atol=scale * float(W.abs().max()))
        # Algorithm 1 state: pruned with the FIFO mean; this batch's own threshold from unpruned dI
        assert lay["tau"] == pytest.approx(sum(lay["fifo"]) / len(lay["fifo"]))
        assert lay["tau_batch"] == pytest.approx(threshold_coefficient(p, est) * float(np.abs(a["dI"]).astype(
            np.float64).mean()), rel=1e-5)
        tau = np.float32(lay["tau"])
        big = np.abs(a["dI"]) >= tau
        assert np.array_equal(a["dI_pruned"][big], a["dI"][big])
        small = a["dI_pruned"][~big]
        assert np.all((small == 0) | np.isclose(np.abs(small), tau))
        assert np.count_nonzero(a["dI_pruned"]) < 0.6 * np.count_nonzero(a["dI"])


def test_frac_bits_follow_the_section_2_rule(small_golden_run: Path) -> None:
    g = load_golden(small_golden_run)
    limit = 2 ** (g.manifest["dw"] - 1) - 1
    for name in g.layers:
        for tname, a in g.arrays[name].items():
            f = g.frac_bits(name, tname)
            m = float(np.abs(a).max())
            assert m * 2.0**f <= limit < m * 2.0 ** (f + 1), (name, tname, f)


def _copy(src: Path, dst: Path) -> Path:
    from sparsetrain.golden.training.tensors import resolve_golden_dir

    shutil.copytree(resolve_golden_dir(src), dst)
    return dst


def test_corrupt_array_is_named(small_golden_run: Path, tmp_path: Path) -> None:
    d = _copy(small_golden_run, tmp_path / "g")
    with np.load(d / NPZ_NAME) as npz:
        arrays = {k: npz[k] for k in npz.files}
    layer = load_golden(d).layers[-1]
    arrays[f"{layer}/dO_pruned"] = arrays[f"{layer}/dO_pruned"].copy()
    arrays[f"{layer}/dO_pruned"].flat[7] += 1.0
    np.savez(d / NPZ_NAME, **arrays)
    with pytest.raises(ValueError, match=f"layer {layer}, array dO_pruned: sha256"):
        load_golden(d)


def test_wrong_shape_and_version_are_named(small_golden_run: Path, tmp_path: Path) -> None:
    d = _copy(small_golden_run, tmp_path / "g")
    man = json.loads((d / MANIFEST_NAME).read_text())
    layer = next(iter(man["layers"]))
    man["layers"][layer]["arrays"]["W"]["shape"][0] += 1
    (d / MANIFEST_NAME).write_text(json.dumps(man))
    with pytest.raises(ValueError, match="meta_sha256' does not match"):  # metadata is under a checksum
        load_golden(d)
    man["meta_sha256"] = meta_sha256(man)  # a writer that got the shape wrong, checksum and all
    (d / MANIFEST_NAME).write_text(json.dumps(man))
    with pytest.raises(ValueError, match=f"layer {layer}, array W: shape"):
        load_golden(d)
    man["layers"][layer]["arrays"]["W"]["shape"][0] -= 1
    man["version"] = 99
    man["meta_sha256"] = meta_sha256(man)
    (d / MANIFEST_NAME).write_text(json.dumps(man))
    with pytest.raises(ValueError, match="version = 99"):
        load_golden(d)


def _layer(seed: int) -> LayerTensors:
    rng = np.random.default_rng(seed)
    return LayerTensors(name="conv", kind="conv_bn_relu", stride=2, padding=1, groups=1, kernel=3, pruned=True,
                        tau=0.5, tau_batch=0.4, fifo=[0.5, 0.5], fifo_full=True, seed=seed,
                        arrays={"W": rng.standard_normal((4, 2, 3, 3)).astype(np.float32),
                                "dO": np.zeros((1, 4, 3, 3), np.float32)})


def test_export_round_trip_and_no_silent_overwrite(tmp_path: Path, seed: int) -> None:
    lt = _layer(seed)
    export_golden(tmp_path, [lt], {"model": "x", "step": 0})
    g = load_golden(tmp_path)
    assert np.array_equal(g["conv", "W"], lt.arrays["W"])
    assert g.layer("conv")["prune_target"] == "dO"
    assert g.frac_bits("conv", "dO") == 15  # all-zero tensor: DW - 1
    with pytest.raises(FileExistsError, match="overwrite"):
        export_golden(tmp_path, [lt], {"model": "x", "step": 0})
    lt.arrays["W"] = lt.arrays["W"] * 2
    export_golden(tmp_path, [lt], {"model": "x", "step": 0}, overwrite=True)
    assert np.array_equal(load_golden(tmp_path)["conv", "W"], lt.arrays["W"])
    with pytest.raises(ValueError, match="tensor = 'dW' is not stored"):
        load_golden(tmp_path)["conv", "dW"]


def test_unknown_tensor_name_is_rejected(tmp_path: Path, seed: int) -> None:
    lt = _layer(seed)
    lt.arrays["dX"] = lt.arrays["W"]
    with pytest.raises(ValueError, match=r"\['dX'\] are out of range"):
        export_golden(tmp_path, [lt], {})
