import numpy as np
import pytest

from prunehw.core.errors import DataError
from prunehw.model.data import MNIST_SHA256, load_mnist, load_npz, mnist_path


def test_mnist_splits_and_exact_pixels(mnist):
    assert mnist.x_train.shape == (50000, 28, 28, 1)
    assert mnist.x_val.shape == (10000, 28, 28, 1)
    assert mnist.x_test.shape == (10000, 28, 28, 1)
    assert mnist.x_train.dtype == np.uint8 and mnist.x_train.max() == 255
    assert mnist.digest == MNIST_SHA256
    assert mnist.n_classes == 10


def test_hash_check_refuses_corrupted_file(tmp_path):
    bad = tmp_path / "mnist.pkl.gz"
    data = bytearray(mnist_path().read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(DataError, match="refusing to unpickle"):
        load_mnist(bad)


def _npz(path, **arrays):
    base = dict(
        x_train=np.zeros((20, 8, 8), np.uint8), y_train=np.arange(20) % 3,
        x_test=np.zeros((5, 8, 8), np.uint8), y_test=np.arange(5) % 3,
    )
    base.update(arrays)
    np.savez(path, **{k: v for k, v in base.items() if v is not None})
    return path


def test_npz_loads_and_adds_channel_axis(tmp_path):
    ds = load_npz(_npz(tmp_path / "d.npz"), val_fraction=0.1)
    assert ds.x_train.shape == (18, 8, 8, 1) and ds.x_val.shape == (2, 8, 8, 1)
    assert ds.n_classes == 3


@pytest.mark.parametrize("arrays, message", [
    (dict(y_test=None), "lacks key 'y_test'"),
    (dict(extra=np.zeros(3)), "unknown key 'extra'"),
    (dict(x_train=np.zeros((20, 8, 8), np.float32)), "x_train has dtype float32; allowed: uint8"),
    (dict(x_test=np.zeros((5, 8), np.uint8)), "x_test has shape (5, 8); allowed"),
    (dict(x_test=np.zeros((5, 9, 9), np.uint8)), "must match"),
    (dict(y_train=np.arange(19)), "y_train has shape (19,); expected (20,)"),
    (dict(y_train=np.full(20, 0.5)), "y_train has dtype float64; allowed: integer labels"),
    (dict(y_test=np.array([0, 1, -1, 0, 1])), "label -1"),
    (dict(x_test=np.zeros((0, 8, 8), np.uint8), y_test=np.zeros(0, np.int64)), "x_test is empty"),
])
def test_npz_errors(tmp_path, arrays, message):
    with pytest.raises(DataError) as exc:
        load_npz(_npz(tmp_path / "d.npz", **arrays))
    assert message in str(exc.value)


def test_npz_not_a_zip(tmp_path):
    path = tmp_path / "d.npz"
    path.write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_npz(path)


def test_npz_missing(tmp_path):
    with pytest.raises(DataError, match="data file not found"):
        load_npz(tmp_path / "none.npz")
