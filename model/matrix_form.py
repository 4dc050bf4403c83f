"""Matrix form of the network (seed Figs 15-17) and the index maps of matrix-based pruning.

A Dense layer is W[n_in, n_out]; a Conv2D is its im2col matrix
W[k*k*c_in, c_out], whose row ``(ky*k + kx)*c_in + c`` is tap (ky, kx) of
input channel c (Keras' kernel layout, reshaped). After a Flatten of an
H x W x C tensor, a Dense row ``(y*W + x)*C + c`` is position (y, x) of
channel c (Keras' HWC flatten order). So every row is ``pos * c_in + c``.

A DepthwiseConv2D's matrix is its (kh*kw) x C taps, one column per channel
(the contract's form); its columns are its input's channels, so it keeps the
columns its source layer keeps (:attr:`Geometry.follows`).

A :class:`LayerMap` says which rows and columns of the *original* matrix a
pruned layer keeps. Kept rows may only use input channels that the previous
weighted layer kept as columns; the smaller layer's row for (pos, c) is
``pos * len(prev_cols) + new_index(c)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from prunehw.core.config import LayerSpec, NetworkConfig
from prunehw.core.errors import ModelFileError
from prunehw.model.kinds import of_layer, weighted_layers

__all__ = ["LayerMap", "Geometry", "geometry", "matrices", "network_spec", "shrink", "row_masks", "expand", "zeroed_original",
           "save_maps", "load_maps", "full_maps", "kept_small_rows"]


@dataclass(frozen=True)
class Geometry:
    """Shape facts of one weighted layer of the original network."""

    name: str
    kind: str          # "conv2d" | "depthwise2d" | "dense"
    n_rows: int        # rows of the original matrix
    n_cols: int        # columns (filters / units; a depthwise layer's channels)
    c_in: int          # input channels (or units) in the original network (1 for a depthwise layer: see below)
    n_pos: int         # rows per input channel: k*k taps, H*W flatten positions, or 1
    src: int | None    # index of the weighted layer feeding it, None for the image
    kernel_shape: tuple[int, ...]

    @property
    def follows(self) -> bool:
        """Whether its columns are its source's (a depthwise convolution: column c is channel c of its input, its
        rows the kh*kw taps every column has). Such a layer keeps the columns its source keeps and all its rows:
        the two, and the rows of the layer reading it, are one dependency group."""
        return self.kind == "depthwise2d"


@dataclass
class LayerMap:
    """Kept original row and column indices of one weighted layer (sorted int arrays)."""

    name: str
    rows: np.ndarray
    cols: np.ndarray
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "rows": self.rows.tolist(), "cols": self.cols.tolist()}


def geometry(model: keras.Model) -> list[Geometry]:
    """Matrix geometry of every Conv2D/Dense layer of a Sequential model of supported layers."""
    out: list[Geometry] = []
    shape = tuple(model.inputs[0].shape[1:])
    positions = 1          # rows per channel of the source layer in a later Dense (a flatten's pixels)
    last_weighted: int | None = None
    for layer in model.layers:
        kd = of_layer(layer)
        if kd.weighted:
            k = tuple(layer.kernel.shape)
            n_rows, n_cols = kd.matrix(np.zeros(k, np.int8)).shape
            n_pos = kd.row_positions(layer, positions)
            # (a depthwise layer's rows are its taps alone, each reading its own column's channel: c_in 1)
            c_in = 1 if kd.follows_source else n_rows // n_pos
            out.append(Geometry(layer.name, kd.types[0], n_rows, n_cols, c_in, n_pos, last_weighted, k))
            last_weighted = len(out) - 1
        positions = kd.flat_positions(layer, shape, positions)
        shape = tuple(layer.compute_output_shape((1, *shape))[1:])
    return out


def matrices(model: keras.Model) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """[(name, W[rows, cols], bias), ...] of every weighted layer, in order."""
    out = []
    for layer in weighted_layers(model):
        out.append((layer.name, of_layer(layer).matrix(layer.kernel.numpy()), layer.bias.numpy()))
    return out


def full_maps(geo: list[Geometry]) -> list[LayerMap]:
    """Maps that keep everything."""
    return [LayerMap(g.name, np.arange(g.n_rows), np.arange(g.n_cols)) for g in geo]


def network_spec(model: keras.Model, maps: list[LayerMap] | None = None) -> NetworkConfig:
    """The model's architecture as config data, with the kept column counts of ``maps``."""
    counts = {m.name: len(m.cols) for m in maps or []}
    specs = [of_layer(layer).spec(layer, counts.get(layer.name)) for layer in model.layers]
    return NetworkConfig(layers=tuple(specs))


def _small_rows(g: Geometry, m: LayerMap, prev_cols: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(row indices in the smaller matrix, the same rows in the original) for every kept row."""
    if g.follows:          # (its rows are taps, the same in every column: the smaller matrix has them all)
        return m.rows, m.rows
    pos, chan = np.divmod(m.rows, g.c_in)
    if prev_cols is None:
        new_c, n_c = chan, g.c_in
    else:
        lookup = np.full(g.c_in, -1)
        lookup[prev_cols] = np.arange(len(prev_cols))
        new_c, n_c = lookup[chan], len(prev_cols)
        if np.any(new_c < 0):
            raise ValueError(f"layer {g.name!r} keeps rows of input channels that its source layer pruned")
    return pos * n_c + new_c, m.rows


def shrink(full: list[tuple[str, np.ndarray, np.ndarray]], geo: list[Geometry], maps: list[LayerMap],
           template: keras.Model, seed: int) -> keras.Model:
    """Build the physically smaller model from original-size matrices and the index maps.

    Rows that the map drops but the smaller layer still has (single conv taps,
    single flatten positions of a kept channel) are zero in the Keras model;
    the matrix form drops them.
    """
    from prunehw.model.network import build_model

    spec = network_spec(template, maps)
    in_shape = tuple(template.inputs[0].shape[1:])
    small = build_model(spec, in_shape, len(maps[-1].cols), seed)
    for i, (layer, g, m, (_, w, b)) in enumerate(zip(weighted_layers(small), geo, maps, full)):
        prev_cols = maps[g.src].cols if g.src is not None else None
        n_c = g.c_in if prev_cols is None or g.follows else len(prev_cols)
        new_rows, old_rows = _small_rows(g, m, prev_cols)
        mat = np.zeros((g.n_pos * n_c, len(m.cols)), dtype=np.float32)
        mat[new_rows] = w[np.ix_(old_rows, m.cols)]
        layer.kernel.assign(mat.reshape(layer.kernel.shape))
        layer.bias.assign(b[m.cols])
    return small


def row_masks(small: keras.Model, geo: list[Geometry], maps: list[LayerMap]) -> dict[str, np.ndarray]:
    """Keep-masks (kernel-shaped) of the smaller model: zero where a single tap/position row was dropped."""
    out = {}
    for layer, g, m in zip(weighted_layers(small), geo, maps):
        new_rows, _ = _small_rows(g, m, maps[g.src].cols if g.src is not None else None)
        mask = np.zeros(layer.kernel.shape, dtype=bool).reshape(-1, len(m.cols))
        mask[new_rows] = True
        out[layer.name] = mask.reshape(layer.kernel.shape)
    return out


def expand(small: keras.Model, geo: list[Geometry], maps: list[LayerMap]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Scatter the smaller model's weights back to original-size matrices (zeros elsewhere)."""
    out = []
    for (name, w_small, b_small), g, m in zip(matrices(small), geo, maps):
        prev_cols = maps[g.src].cols if g.src is not None else None
        new_rows, old_rows = _small_rows(g, m, prev_cols)
        w = np.zeros((g.n_rows, g.n_cols), dtype=np.float32)
        w[np.ix_(old_rows, m.cols)] = w_small[new_rows]
        b = np.zeros(g.n_cols, dtype=np.float32)
        b[m.cols] = b_small
        out.append((name, w, b))
    return out


def zeroed_original(original: keras.Model, geo: list[Geometry], maps: list[LayerMap]) -> keras.Model:
    """A copy of the original-size model with every pruned row, column and bias set to zero."""
    from prunehw.model.network import strip_training_state

    clone = strip_training_state(original)
    for layer, g, m in zip(weighted_layers(clone), geo, maps):
        mask = np.zeros((g.n_rows, g.n_cols), dtype=np.float32)
        mask[np.ix_(m.rows, m.cols)] = 1.0
        layer.kernel.assign(layer.kernel.numpy() * mask.reshape(g.kernel_shape))
        bmask = np.zeros(g.n_cols, dtype=np.float32)
        bmask[m.cols] = 1.0
        layer.bias.assign(layer.bias.numpy() * bmask)
    return clone


def kept_small_rows(geo: list[Geometry], maps: list[LayerMap]) -> dict[str, list[int]]:
    """Per layer, the rows of the *smaller* matrix that the maps keep (the rest are zero rows)."""
    return {m.name: _small_rows(g, m, maps[g.src].cols if g.src is not None else None)[0].tolist()
            for g, m in zip(geo, maps)}


def save_maps(path: Path, geo: list[Geometry], maps: list[LayerMap]) -> Path:
    from prunehw.core.artifacts import write_json

    return write_json(path, {
        "version": 1,
        "layers": [
            {**m.to_dict(), "kind": g.kind, "original_shape": [g.n_rows, g.n_cols], "c_in": g.c_in, "n_pos": g.n_pos,
             "src": g.src, "kept_shape": [len(m.rows), len(m.cols)]}
            for g, m in zip(geo, maps)
        ],
    })


def load_maps(path: Path) -> list[LayerMap]:
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"index map file not found: {path}")
    try:
        raw = json.loads(path.read_text())
        return [LayerMap(l["name"], np.asarray(l["rows"], dtype=np.int64), np.asarray(l["cols"], dtype=np.int64)) for l in raw["layers"]]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"index map file {path} is corrupt ({type(exc).__name__}: {exc})") from None
