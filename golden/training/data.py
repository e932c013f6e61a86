"""Fashion-MNIST from Debian's dataset-fashion-mnist (idx files read with numpy).

Images become float32 tensors N x 1 x S x S, normalised with the training set's mean and
standard deviation, zero-padded (in the normalised domain: the background value) from 28 to
``input_size`` when that is larger, so the CIFAR-shaped networks see 32x32 inputs.
"""
from __future__ import annotations

import gzip
import zlib
from functools import lru_cache
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ...arch.fixedpoint import check_param

DATASET_DIR = Path("/usr/share/datasets/fashion-mnist")
INSTALL_HINT = "apt-get install dataset-fashion-mnist"
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
SPLIT_SIZES = {"train": 60000, "test": 10000}
# Mean and standard deviation of the 60k training images scaled to [0, 1].
MEAN, STD = 0.2860, 0.3530
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot")
_IDX_DTYPES = {0x08: np.uint8}


def read_idx(path: Path) -> np.ndarray:
    """An idx file (optionally gzip-compressed) as a numpy array of its declared shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (EOFError, OSError, zlib.error) as exc:  # truncated or damaged download
        reason = (str(exc).splitlines() or [""])[0] or type(exc).__name__
        raise ValueError(f"{path}: cannot be read ({reason}); allowed: an intact idx file; reinstall it with: "
                         f"{INSTALL_HINT} --reinstall") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an unsigned-byte idx file (magic {raw[:4].hex()})")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {data.size} bytes of data, header says {dims}")
    return data.reshape(dims)


def dataset_files(split: str, root: Path = DATASET_DIR) -> tuple[Path, Path]:
    if split not in FILES:
        raise ValueError(f"split = {split!r} is out of range; allowed: {', '.join(FILES)}")
    paths = tuple(Path(root) / name for name in FILES[split])
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"Fashion-MNIST is missing ({', '.join(missing)}); install it with: {INSTALL_HINT}")
    return paths  # type: ignore[return-value]


@lru_cache(maxsize=4)  # decompressing the 60k split takes seconds; arrays are read-only
def load_split(split: str, root: Path = DATASET_DIR) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 N x 28 x 28, labels uint8 N) of "train" or "test" (read-only arrays)."""
    img_path, lbl_path = dataset_files(split, root)
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"{img_path}: images {images.shape} and labels {labels.shape} do not match")
    return images, labels


def to_tensor(images: np.ndarray, input_size: int = 32) -> torch.Tensor:
    """uint8 N x 28 x 28 -> normalised float32 N x 1 x S x S (centred zero padding when S > 28)."""
    check_param("input_size", input_size, 28, 4096)
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    x = (x - MEAN) / STD
    pad = input_size - images.shape[-1]
    if pad:
        lo = pad // 2
        x = torch.nn.functional.pad(x, (lo, pad - lo, lo, pad - lo), value=(0.0 - MEAN) / STD)
    return x.contiguous()


@dataclass
class Split:
    images: torch.Tensor  # N x 1 x S x S float32
    labels: torch.Tensor  # N int64

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batches(self, batch_size: int, *, generator: torch.Generator | None = None,
                drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Mini-batches, shuffled with ``generator`` when one is given."""
        check_param("batch_size", batch_size, 1, 1 << 20)
        n = len(self)
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        stop = n - n % batch_size if drop_last else n
        for i in range(0, stop, batch_size):
            idx = order[i:i + batch_size]
            yield self.images[idx], self.labels[idx]


def fashion_mnist(split: str, *, samples: int | None = None, input_size: int = 32, subset_seed: int = 0,
                  root: Path = DATASET_DIR) -> Split:
    """A split as tensors; ``samples`` takes a class-mixed random subset (fixed by ``subset_seed``)."""
    images, labels = load_split(split, root)
    if samples is not None:
        check_param("samples", samples, 1, len(labels))
        if samples < len(labels):
            pick = np.random.default_rng(subset_seed).permutation(len(labels))[:samples]
            images, labels = images[np.sort(pick)], labels[np.sort(pick)]
    return Split(to_tensor(images, input_size), torch.from_numpy(labels.astype(np.int64)))
