"""Fashion-MNIST loading from the Debian idx files."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from sparsetrain.golden.training.data import (INSTALL_HINT, MEAN, STD, fashion_mnist, load_split, read_idx,
                                              to_tensor)


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_idx_round_trip(tmp_path: Path, seed: int) -> None:
    a = np.random.default_rng(seed).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    _write_idx(tmp_path / "x.gz", a)
    assert np.array_equal(read_idx(tmp_path / "x.gz"), a)
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x00\x00\x0d\x01\x00\x00\x00\x01abcd"))
    with pytest.raises(ValueError, match="not an unsigned-byte idx"):
        read_idx(tmp_path / "bad.gz")


def test_missing_dataset_names_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist("train", root=tmp_path)
    assert "dataset-fashion-mnist" in INSTALL_HINT
    with pytest.raises(ValueError, match="split = 'val'"):
        fashion_mnist("val", root=tmp_path)


def test_real_fashion_mnist_has_60k_and_10k_balanced_images() -> None:
    for split, n in (("train", 60000), ("test", 10000)):
        images, labels = load_split(split)
        assert images.shape == (n, 28, 28) and labels.shape == (n,)
        assert np.array_equal(np.bincount(labels, minlength=10), np.full(10, n // 10))
    images, _ = load_split("train")
    assert images.mean(dtype=np.float64) / 255 == pytest.approx(MEAN, abs=5e-4)
    assert images[::6].std(dtype=np.float64) / 255 == pytest.approx(STD, abs=2e-3)  # every 6th: 10k images


def test_subset_is_reproducible_and_padding_uses_the_background_value() -> None:
    a = fashion_mnist("test", samples=300, subset_seed=5)
    b = fashion_mnist("test", samples=300, subset_seed=5)
    c = fashion_mnist("test", samples=300, subset_seed=6)
    assert a.images.shape == (300, 1, 32, 32) and torch.equal(a.labels, b.labels) and torch.equal(a.images, b.images)
    assert not torch.equal(a.labels, c.labels)
    assert torch.all(a.images[:, :, :2, :] == (0 - MEAN) / STD) and torch.all(a.images[:, :, :, -2:] == (0 - MEAN) / STD)
    raw = np.zeros((1, 28, 28), np.uint8)
    raw[0, 0, 0] = 255
    x = to_tensor(raw, 32)
    assert x[0, 0, 2, 2] == pytest.approx((1 - MEAN) / STD)  # the image sits in the centre
    assert to_tensor(raw, 28).shape == (1, 1, 28, 28)
    with pytest.raises(ValueError, match="input_size = 20"):
        to_tensor(raw, 20)
    batches = list(a.batches(128))
    assert [len(y) for _, y in batches] == [128, 128, 44]
