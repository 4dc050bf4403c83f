"""The golden integer model: the numeric contract executed in numpy, the reference for everything else.

Integer semantics throughout. Matrix products run in float64 BLAS only when
the contract's accumulator width (derived from the weights, so that no
allowed input can exceed it) is at most 53 bits, which makes every product
and partial sum an exactly representable integer; otherwise they run in int64.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from prunehw.core.errors import DataError

__all__ = ["requantize", "golden"]


def requantize(acc: np.ndarray, acc_frac: int, out: dict) -> np.ndarray:
    """ReLU (if ``out['relu']``), round half up to ``out['frac']`` (add half an LSB, floor), saturate to ``out['bits']``."""
    acc = np.asarray(acc, dtype=np.int64)
    if out.get("relu"):
        acc = np.maximum(acc, 0)
    shift = acc_frac - out["frac"]
    if shift > 0:
        q = (acc + (1 << (shift - 1))) >> shift
    else:
        q = acc << (-shift)
    if out["signed"]:
        lo, hi = -(1 << (out["bits"] - 1)), (1 << (out["bits"] - 1)) - 1
    else:
        lo, hi = 0, (1 << out["bits"]) - 1
    return np.clip(q, lo, hi)


def _matmul(a: np.ndarray, w: np.ndarray, acc_bits: int) -> np.ndarray:
    if acc_bits <= 53:
        return np.rint(a.astype(np.float64) @ w.astype(np.float64)).astype(np.int64)
    return a @ w


def _im2col(a: np.ndarray, k: int) -> np.ndarray:
    """(N, H, W, C) -> (N, H-k+1, W-k+1, k*k*C), rows ordered (ky, kx, c) like the contract's matrices."""
    win = sliding_window_view(a, (k, k), axis=(1, 2))          # N, H', W', C, ky, kx
    win = win.transpose(0, 1, 2, 4, 5, 3)                      # N, H', W', ky, kx, C
    return win.reshape(*win.shape[:3], -1)


def _layer(layer: dict, a: np.ndarray, contract) -> np.ndarray:
    t = layer["type"]
    if t in ("conv2d", "dense"):
        w, b = contract.weights[layer["name"]], contract.biases[layer["name"]]
        cols = _im2col(a, layer["kernel"]) if t == "conv2d" else a
        acc = _matmul(cols, w, layer["accum"]["bits"]) + b
        if layer["output"]["bits"] == layer["accum"]["bits"] and layer["output"]["frac"] == layer["accum"]["frac"] and not layer["output"]["relu"]:
            return acc
        return requantize(acc, layer["accum"]["frac"], layer["output"])
    if t == "maxpool2d":
        p = layer["pool"]
        n, h, w_, c = a.shape
        a = a[:, : h // p * p, : w_ // p * p]
        return a.reshape(n, h // p, p, w_ // p, p, c).max(axis=(2, 4))
    return a.reshape(len(a), -1)


def golden(contract, x: np.ndarray, return_all: bool = False, batch: int = 1000):
    """Logits (int64, at the last accumulator's frac) of uint8 images ``x``; with ``return_all``
    also {layer name: integer outputs} of every layer."""
    shape = tuple(contract.input["shape"])
    if x.dtype != np.uint8:
        raise DataError(f"golden model input has dtype {x.dtype}; allowed: uint8 images")
    if x.ndim == 3 and len(shape) == 3 and shape[2] == 1:
        x = x[..., None]
    if tuple(x.shape[1:]) != shape:
        raise DataError(f"golden model input images are {tuple(x.shape[1:])}; the contract expects {shape}")
    outs: dict[str, list] = {}
    logits = []
    for start in range(0, len(x), batch):
        a = x[start:start + batch].astype(np.int64)
        for layer in contract.layers:
            a = _layer(layer, a, contract)
            if return_all:
                outs.setdefault(layer["name"], []).append(a)
        logits.append(a)
    out = np.concatenate(logits) if logits else np.zeros((0, contract.weighted()[-1]["out_channels"]), np.int64)
    if return_all:
        return out, {k: np.concatenate(v) for k, v in outs.items()}
    return out

