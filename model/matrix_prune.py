"""Matrix-based pruning (seed §VI, DESIGN §4): remove whole columns and rows, keep dense matrices.

A column is an output channel of a conv or a neuron of a dense layer; removing
it also removes its rows in the next weighted layer (through pooling and
flatten, every spatial position of that channel). A row on its own is one
(ky, kx, c_in) tap of every filter of a conv, or one input of a dense layer.
The final layer's outputs (the classes) are never removed.

How many columns each layer keeps: the same kept fraction ``q`` of every
non-final layer's columns, the largest ``q`` whose weight count meets the
target ratio. In tile-aware mode, column counts are rounded to multiples of
the array's columns and row counts down to multiples of its rows, so every
tile is full; the ratio is then reported as measured.
Which columns and rows go: the lowest-scoring by the chosen criterion.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from prunehw.core.config import CRITERIA, ArrayConfig
from prunehw.core.errors import ConfigError
from prunehw.model.data import Dataset, to_float
from prunehw.model.kinds import weighted_layers
from prunehw.model.matrix_form import (Geometry, LayerMap, expand, full_maps, geometry, matrices, row_masks, shrink,
                                       _small_rows)
from prunehw.model.prune import keep_masks
from prunehw.model.pruning_schedule import PruningSchedule
from prunehw.model.train import fit

__all__ = ["structure_scores", "plan_counts", "target_counts", "cost_counts", "select", "prune_matrix"]

def _weighted(model: keras.Model) -> list[keras.layers.Layer]:
    return weighted_layers(model)


def _gradients(model: keras.Model, x: np.ndarray, y: np.ndarray, batch: int):
    """Yield, per mini-batch: (kernel gradients, layer outputs h, dC/dh) of every weighted layer."""
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    weighted = _weighted(model)
    for start in range(0, len(x), batch):
        xb = tf.convert_to_tensor(to_float(x[start:start + batch]))
        yb = tf.convert_to_tensor(y[start:start + batch])
        with tf.GradientTape() as tape:
            hs, out = [], xb
            for layer in model.layers:
                out = layer(out)
                if layer in weighted:
                    hs.append(out)
            loss = loss_fn(yb, out)
        grads = tape.gradient(loss, [l.kernel for l in weighted] + hs)
        n = len(weighted)
        yield [g.numpy() for g in grads[:n]], [h.numpy() for h in hs], [g.numpy() for g in grads[n:]]


def structure_scores(model: keras.Model, geo: list[Geometry], maps: list[LayerMap], criterion: str,
                     x: np.ndarray, y: np.ndarray, batch: int = 32) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Importance of every kept column and kept row of every weighted layer of the (smaller) ``model``.

    Returns (column scores, row scores), per layer, aligned with ``maps[i].cols`` and ``maps[i].rows``.

    - ``l1`` / ``l2``: norm of the column or row in the matrix form.
    - ``taylor`` (Molchanov et al.): columns |mean over positions of dC/dh * h| averaged over
      examples; rows |sum over the row of dC/dw * w| averaged over mini-batches.
    - ``fisher`` (OBD saliency, diagonal Fisher): sum over the structure of 0.5 * F_w * w^2,
      F_w the mean squared mini-batch gradient.
    """
    if criterion not in CRITERIA:
        raise ConfigError(f"criterion {criterion!r} is unknown; allowed: {', '.join(CRITERIA)}")
    mats = [w for _, w, _ in matrices(model)]
    row_index = [_small_rows(g, m, maps[g.src].cols if g.src is not None else None)[0] for g, m in zip(geo, maps)]
    if criterion in ("l1", "l2"):
        norm = (lambda a, axis: np.abs(a).sum(axis)) if criterion == "l1" else (lambda a, axis: np.sqrt(np.square(a).sum(axis)))
        return [norm(w, 0) for w in mats], [norm(w[r], 1) for w, r in zip(mats, row_index)]
    n_batches = 0
    col_acc = [np.zeros(w.shape[1]) for w in mats]
    row_acc = [np.zeros(len(r)) for r in row_index]
    fisher = [np.zeros_like(w, dtype=np.float64) for w in mats]
    for kgrads, hs, hgrads in _gradients(model, x, y, batch):
        n_batches += 1
        for i, (kg, h, hg) in enumerate(zip(kgrads, hs, hgrads)):
            g = kg.reshape(mats[i].shape)
            if criterion == "taylor":
                # dC/dh is of the batch-mean loss; scale back to per-example gradients.
                per_example = (hg * h * len(h)).reshape(len(h), -1, h.shape[-1]).mean(axis=1)
                col_acc[i] += np.abs(per_example).sum(axis=0)
                row_acc[i] += np.abs((g * mats[i])[row_index[i]].sum(axis=1))
            else:
                fisher[i] += np.square(g.astype(np.float64))
    if criterion == "taylor":
        return [c / len(x) for c in col_acc], [r / n_batches for r in row_acc]
    sal = [0.5 * f / n_batches * np.square(w) for f, w in zip(fisher, mats)]
    return [s.sum(axis=0) for s in sal], [s[r].sum(axis=1) for s, r in zip(sal, row_index)]


def _round_tile(n: int, tile: int, available: int) -> int:
    """Nearest multiple of ``tile`` to ``n`` (at least one tile), never more than ``available``."""
    if available <= tile:
        return available
    m = max(tile, int(round(n / tile)) * tile)
    return m if m <= available else (available // tile) * tile


def plan_counts(geo: list[Geometry], maps: list[LayerMap], q: float, array: ArrayConfig | None,
                floor: list[tuple[int, int]] | None = None) -> list[tuple[int, int]]:
    """(kept rows, kept cols) of every layer for kept column fraction ``q`` of the original network.

    ``floor``: counts no layer may go below (the final step's), so that
    intermediate steps never remove what the final, tile-rounded step keeps.
    """
    n = len(geo)
    cols = []
    for i, (g, m) in enumerate(zip(geo, maps)):
        if i == n - 1 or g.follows:       # (the classes; a depthwise layer's channels, its source's)
            cols.append(cols[g.src] if g.follows and g.src is not None else len(m.cols))
            continue
        want = max(1, min(len(m.cols), int(round(q * g.n_cols))))
        if floor is not None:
            want = max(want, floor[i][1])
        if array is not None:
            want = _round_tile(want, _col_tile(geo, i, array), len(m.cols))
        cols.append(want)
    counts = []
    for i, (g, m) in enumerate(zip(geo, maps)):
        if g.src is None or g.follows:
            rows = len(m.rows)
        else:
            frac = cols[g.src] / len(maps[g.src].cols)
            rows = int(round(len(m.rows) * frac))
        if array is not None and g.n_pos > 1 and rows > array.rows and not g.follows:
            rows = (rows // array.rows) * array.rows
        if floor is not None:
            rows = max(rows, floor[i][0])
        counts.append((rows, cols[i]))
    return counts


def target_counts(geo: list[Geometry], maps: list[LayerMap], ratio: float, array: ArrayConfig | None,
                  floor: list[tuple[int, int]] | None = None) -> list[tuple[int, int]]:
    """Counts for the largest kept fraction ``q`` whose weights meet ``ratio`` of the original network."""
    budget = (1.0 - ratio) * sum(g.n_rows * g.n_cols for g in geo)
    for q in np.linspace(1.0, 0.0, 2001):
        counts = plan_counts(geo, maps, float(q), array, floor)
        if sum(r * c for r, c in counts) <= budget:
            return counts
    return counts


def _col_tile(geo: list[Geometry], i: int, array: ArrayConfig) -> int:
    """Columns of layer ``i`` go a whole array tile at a time (a layer feeding a dense layer's rows directly: a
    tile that also fills whole row tiles there)."""
    feeds_dense_rows = any(h.src == i and h.n_pos == 1 for h in geo)
    return math.lcm(array.cols, array.rows) if feeds_dense_rows else array.cols


def cost_counts(geo: list[Geometry], maps: list[LayerMap], col_scores, row_scores, array: ArrayConfig,
                cost, target: float, judge=None) -> tuple[list[tuple[int, int]], float]:
    """(kept rows, kept cols) of every layer whose ``cost`` (cycles or energy, of counts) is at most ``target``,
    removing the least salient structures per unit of cost saved: returns the counts and their cost.

    From the current maps, each round tries every structure that can go: a column tile of a non-final layer (its
    columns, and the rows they feed in the next layer, go with it) and a row tile of a convolution (which
    columns and rows: the lowest-scoring of that layer); each is priced by what it costs the network over the
    cost it saves, and the cheapest goes. What it costs the network: ``judge(counts)`` (the loss of the model
    with those structures zeroed, on calibration images: comparable across layers), or without a judge the
    scores removed as a share of the layer's total score times its weight count. It stops at the first counts
    within ``target`` (or when nothing can go: the caller reports the target missed), then gives back, one at
    a time, the tiles that lower the loss most while the cost stays within ``target`` (the last tile removed
    may have saved more than was needed). Tile-aware by construction: columns go a tile at a time, and a
    convolution's rows are whole row tiles.
    """
    R = array.rows
    n = len(geo)
    cols = [len(m.cols) for m in maps]
    drop = [0] * n                        # row tiles removed from each convolution beyond what its source's columns take
    csort = [np.sort(np.asarray(s, dtype=np.float64)) for s in col_scores]
    rsort = [np.sort(np.asarray(s, dtype=np.float64)) for s in row_scores]
    weights = [len(m.rows) * len(m.cols) for m in maps]

    def counts_of(cols, drop):
        out, cols = [], _followed(geo, cols)
        for i, (g, m) in enumerate(zip(geo, maps)):
            rows = len(m.rows) if g.src is None or g.follows else \
                int(round(len(m.rows) * cols[g.src] / len(maps[g.src].cols)))
            if g.n_pos > 1 and rows > R and not g.follows:
                rows = max(R, (rows // R) * R - drop[i] * R)
            out.append((rows, cols[i]))
        return out

    def share(sorted_scores, k, i):
        total = sorted_scores.sum()
        return float(sorted_scores[:max(k, 0)].sum() / total * weights[i]) if total > 0 else 0.0

    def lost(counts) -> float:
        """What the counts cost the network: the judge's loss, or the lowest-scoring columns' and rows' share."""
        if judge is not None:
            return judge(counts)
        return sum(share(csort[i], len(m.cols) - c, i) + share(rsort[i], len(m.rows) - r, i)
                   for i, (m, (r, c)) in enumerate(zip(maps, counts)))

    def moves(give_back: bool):
        """(columns, row tiles dropped) one tile away: a column tile of a non-final layer and a row tile of a
        convolution, removed, or (``give_back``) restored."""
        out = []
        for i, g in enumerate(geo):
            tile = _col_tile(geo, i, array)
            if g.follows:       # (its columns go with its source's, its taps stay)
                continue
            if i < n - 1 and (cols[i] < len(maps[i].cols) if give_back else cols[i] > tile):
                new = min(len(maps[i].cols), (cols[i] // tile + 1) * tile) if give_back else ((cols[i] - 1) // tile) * tile
                out.append(([*cols[:i], new, *cols[i + 1:]], drop))
            if drop[i] > 0 if give_back else g.n_pos > 1 and counts[i][0] > R:
                out.append((cols, [*drop[:i], drop[i] + (-1 if give_back else 1), *drop[i + 1:]]))
        return out

    counts = counts_of(cols, drop)
    now, gone = cost(counts), lost(counts)
    while now > target:
        best = None
        for c, d in moves(give_back=False):
            trial = counts_of(c, d)
            saved = now - cost(trial)
            price = (lost(trial) - gone) / saved if saved > 0 else None
            if price is not None and (best is None or price < best[0]):
                best = (price, c, d, trial)
        if best is None:
            break
        _, cols, drop, counts = best
        now, gone = cost(counts), lost(counts)
    # the last structure removed may have saved more than was needed: give back, while the cost stays within the
    # target, what lowers the loss most
    while now <= target:
        best = None
        for c, d in moves(give_back=True):
            trial = counts_of(c, d)
            if trial != counts and cost(trial) <= target:
                loss = lost(trial)
                if best is None or loss < best[0]:
                    best = (loss, c, d, trial)
        if best is None:
            break
        _, cols, drop, counts = best
        now, gone = cost(counts), lost(counts)
    return counts, now


def _followed(geo: list[Geometry], cols: list[int]) -> list[int]:
    """Kept column counts with each depthwise layer's set to its source's."""
    out = list(cols)
    for i, g in enumerate(geo):
        if g.follows and g.src is not None:
            out[i] = out[g.src]
    return out


def _group_scores(geo: list[Geometry], col_scores) -> list[np.ndarray]:
    """Column scores by dependency group: a layer's columns and the channels of the depthwise layers that follow
    it (directly or through another) are removed together, so each channel is scored by the sum of its members'
    scores, each a share of its own layer's total (scores of different layers are on different scales)."""
    lead = list(range(len(geo)))            # each layer's group: the layer whose columns it follows
    for i, g in enumerate(geo):
        if g.follows and g.src is not None:
            lead[i] = lead[g.src]
    out = [np.asarray(s, np.float64) for s in col_scores]
    for i in sorted(set(lead)):
        members = [j for j in range(len(geo)) if lead[j] == i]
        if len(members) > 1:
            out[i] = sum(out[j] / max(float(out[j].sum()), 1e-30) for j in members)
    return out


def select(geo: list[Geometry], maps: list[LayerMap], col_scores, row_scores,
           counts: list[tuple[int, int]]) -> list[LayerMap]:
    """New index maps keeping the highest-scoring ``counts`` columns, then rows, of every layer."""
    scores = _group_scores(geo, col_scores)
    new_cols = []
    for g, m, s, (_, nc) in zip(geo, maps, scores, counts):
        if g.follows and g.src is not None:       # (the channels its source keeps)
            new_cols.append(new_cols[g.src])
            continue
        keep = np.sort(np.argsort(-s, kind="stable")[:nc])
        new_cols.append(m.cols[keep])
    out = []
    for g, m, s, (nr, _), cols in zip(geo, maps, row_scores, counts, new_cols):
        alive = np.ones(len(m.rows), dtype=bool)
        if g.src is not None and not g.follows:
            alive = np.isin(m.rows % g.c_in, new_cols[g.src])
        idx = np.flatnonzero(alive)
        if len(idx) > nr and g.n_pos > 1:
            idx = np.sort(idx[np.argsort(-s[idx], kind="stable")[:nr]])
        out.append(LayerMap(m.name, m.rows[idx], cols))
    return out


def prune_matrix(model: keras.Model, data: Dataset, schedule: PruningSchedule, *, criterion: str,
                 array: ArrayConfig | None, learning_rate: float, batch_size: int, calibration: int,
                 seed: int, desc: str = "matrix", cost=None,
                 target: float | None = None) -> tuple[keras.Model, list[Geometry], list[LayerMap]]:
    """Prune ``model`` by rows and columns following ``schedule``; returns the smaller model and its maps.

    The final, tile-rounded (``array``) counts are computed first; earlier
    steps approach them without going below them.

    With ``cost`` (a function of the counts, e.g. the accelerator's exact cycles) and ``target``, the counts
    come from :func:`cost_counts` instead, step by step: step k aims at the dense cost minus the share of the
    way to ``target`` that the schedule's ratio at step k is of its final ratio, the last at ``target``
    itself; what each step keeps is chosen from the scores of the model it has then.
    """
    geo = geometry(model)
    maps = full_maps(geo)
    full = matrices(model)
    small = model
    rng = np.random.default_rng(seed)
    calib = rng.choice(len(data.x_train), size=min(calibration, len(data.x_train)), replace=False)
    plan = schedule.plan()
    if cost is None:
        final = target_counts(geo, maps, schedule.ratio, array)
    else:
        start = cost([(len(m.rows), len(m.cols)) for m in maps])
        probe = keras.models.clone_model(model)      # the original architecture, for the candidates' losses
    for step, (ratio, epochs) in enumerate(tqdm(plan, desc=f"{desc} steps", unit="step", leave=False)):
        last = step == len(plan) - 1
        cols, rows = structure_scores(small, geo, maps, criterion, data.x_train[calib], data.y_train[calib])
        if cost is None:
            counts = final if last else target_counts(geo, maps, ratio, None, floor=final)
        else:
            aim = target if last else start - (start - target) * ratio / plan[-1][0]
            judge = _masked_loss(probe, geo, maps, full, cols, rows, data.x_train[calib[:512]], data.y_train[calib[:512]])
            counts, _ = cost_counts(geo, maps, cols, rows, array, cost, aim, judge=judge)
        maps = select(geo, maps, cols, rows, counts)
        small = shrink(full, geo, maps, model, seed)
        if epochs:
            # dropped single rows are zeros inside the smaller Keras layers; keep them zero
            with keep_masks(small, row_masks(small, geo, maps)):
                fit(small, data, epochs, batch_size, learning_rate, desc=f"{desc} step {step + 1}/{len(plan)} epoch")
        full = expand(small, geo, maps)
    return small, geo, maps


def _masked_loss(probe: keras.Model, geo, maps, full, col_scores, row_scores, x: np.ndarray, y: np.ndarray):
    """A judge for :func:`cost_counts`: the cross-entropy on ``x`` of the network whose weights are ``full`` with
    everything outside the maps ``select`` makes of the counts set to zero (run on ``probe``, a model of the
    original architecture)."""
    xf = tf.convert_to_tensor(to_float(x))
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    weighted = _weighted(probe)

    def judge(counts) -> float:
        for layer, (_, w, b), g, m in zip(weighted, full, geo, select(geo, maps, col_scores, row_scores, counts)):
            keep = np.zeros_like(w)
            keep[np.ix_(m.rows, m.cols)] = w[np.ix_(m.rows, m.cols)]
            bias = np.zeros_like(b)
            bias[m.cols] = b[m.cols]
            layer.kernel.assign(keep.reshape(g.kernel_shape))
            layer.bias.assign(bias)
        return float(loss_fn(y, probe(xf, training=False)))

    return judge
