"""One stimulus generator for the hardware tests: random int8 tiles and activations, with the extremes."""

import numpy as np


def int8_matrix(rng, shape, extremes: bool = True) -> np.ndarray:
    w = rng.integers(-128, 128, size=shape)
    if extremes:
        flat = w.reshape(-1)
        flat[: min(4, flat.size)] = [-128, 127, -128, 127][: min(4, flat.size)]
    return w


def activations(rng, shape, signed: bool) -> np.ndarray:
    lo, hi = (-128, 128) if signed else (0, 256)
    x = rng.integers(lo, hi, size=shape)
    flat = x.reshape(-1)
    flat[: min(2, flat.size)] = [lo, hi - 1][: min(2, flat.size)]
    return x


def folds(rng, rows: int, cols: int, lengths=(5, 1, 1, 3, 2)):
    """[(W tile, X beats)]: folds of different lengths, 1-beat folds back to back like a dense layer."""
    return [(int8_matrix(rng, (rows, cols)), activations(rng, (n, rows), signed=bool(i % 2))) for i, n in enumerate(lengths)]
