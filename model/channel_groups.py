"""Matrix pruning of a network that is not a chain: its channels in dependency groups (DepGraph, Fang et al. 2023).

In a chain every convolution's filters are its own to prune (``model/matrix_prune.py``). Where branches meet, they
are not: the two inputs of a residual ``Add`` must have the same channels, so a channel removed from one must go
from the other, from every layer that produced either (the convolution that ends the branch, the shortcut's
convolution, or the block before, for an identity shortcut) and from every layer that reads the sum. A depthwise
convolution's channels are its input's. :func:`channel_groups` finds these couplings on the Keras graph: each
weighted layer's output channels start a group; a depthwise convolution, a ReLU, a pooling and a Flatten keep their
input's group; an ``Add`` joins its inputs' groups into one. The network's input channels and its logits are
groups that are never pruned.

:func:`prune_groups` then removes whole channels of each group (the lowest-scoring: each member layer's column
norm, as a share of that layer's total, summed over the group's producers and depthwise members), the same
fraction of every group, rounded to whole array column tiles (``tile_aware``), step by step with fine-tuning, and
rebuilds the network as a smaller dense Keras model of the same graph (:func:`shrink_groups`): it computes exactly
what the full model computes with the removed channels' columns and biases set to zero (:func:`zero_groups`).

Rows are what no group couples: a row of a convolution's matrix is one (ky, kx, c) tap of all its filters, read by
that layer alone. Tile-aware, a layer whose kept rows do not fill whole array row tiles (a stem convolution on
an image's 3 channels: 27 rows, the last of 4 tiles of 8 holding 3) has its lowest-norm rows removed down to whole
tiles (:func:`tile_rows`), as ``model/matrix_prune.py`` rounds a chain's rows; they stay zero through the last
fine-tuning, and the record says which rows each layer kept, so the accelerator skips the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np
from tqdm.auto import tqdm

from prunehw.core.config import ArrayConfig
from prunehw.core.errors import ConfigError
from prunehw.core.graph import INPUT
from prunehw.model.graph import keras_graph
from prunehw.model.prune import apply_masks, keep_masks

__all__ = ["ChannelGroup", "channel_groups", "group_weights", "select_channels", "shrink_groups", "zero_groups",
           "tile_rows", "prune_groups"]


@dataclass
class ChannelGroup:
    """Channels that are removed together. ``producers``: the Conv2D/Dense layers whose output columns they are;
    ``followers``: the depthwise layers whose channels they are; ``readers``: (weighted layer, rows per channel)
    of each layer that reads them as input rows (a kernel's taps, or a Flatten's positions); ``prunable``: False for
    the network's input channels and for the logits."""

    size: int
    producers: list[str] = field(default_factory=list)
    followers: list[str] = field(default_factory=list)
    readers: list[tuple[str, int]] = field(default_factory=list)
    prunable: bool = True


def channel_groups(model: keras.Model) -> tuple[list[ChannelGroup], dict[str, int], dict[str, int]]:
    """(the groups, the group of each weighted layer's input channels, the group of its output channels).

    Union-find over the graph's tensors: a Conv2D or Dense starts a group for its output, any other layer (a
    depthwise convolution, ReLU, pooling, Flatten) passes its input's on, an Add unites its inputs'."""
    graph = keras_graph(model)
    parent: list[int] = []
    sizes: list[int] = []

    def new(size: int) -> int:
        parent.append(len(parent))
        sizes.append(size)
        return len(parent) - 1

    def find(g: int) -> int:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    group_of = {INPUT: new(int(graph.input_shape[-1]))}
    positions = {INPUT: 1}                       # rows per channel a Dense reading this tensor has (Flatten's pixels)
    inputs, outputs, kinds = {}, {}, {}
    for node in graph:
        layer, srcs = node.attrs["layer"], node.inputs
        cls = type(layer).__name__
        kinds[node.name] = cls
        if cls in ("Conv2D", "Dense"):
            inputs[node.name] = group_of[srcs[0]]
            group_of[node.name] = outputs[node.name] = new(int(node.shape[-1]))
            positions[node.name] = 1
            continue
        if cls == "Add":
            root = find(group_of[srcs[0]])
            for s in srcs[1:]:
                parent[find(group_of[s])] = root
        group_of[node.name] = group_of[srcs[0]]
        if cls == "DepthwiseConv2D":
            inputs[node.name] = outputs[node.name] = group_of[srcs[0]]
        src_shape = graph.input_shapes(node)[0]
        positions[node.name] = int(np.prod(src_shape[:-1])) if cls == "Flatten" else positions[srcs[0]]
    roots = sorted({find(g) for g in range(len(parent))})
    index = {r: i for i, r in enumerate(roots)}
    groups = [ChannelGroup(sizes[r]) for r in roots]
    layer_in = {n: index[find(g)] for n, g in inputs.items()}
    layer_out = {n: index[find(g)] for n, g in outputs.items()}
    groups[index[find(group_of[INPUT])]].prunable = False
    groups[index[find(group_of[graph.output.name])]].prunable = False
    for node in graph:
        n = node.name
        if n not in layer_in:
            continue
        layer = node.attrs["layer"]
        if kinds[n] == "DepthwiseConv2D":
            groups[layer_out[n]].followers.append(n)
            continue
        groups[layer_out[n]].producers.append(n)
        per = int(np.prod(layer.kernel.shape[:2])) if kinds[n] == "Conv2D" else positions[node.inputs[0]]
        groups[layer_in[n]].readers.append((n, per))
    return groups, layer_in, layer_out


def _weighted(model: keras.Model) -> dict[str, keras.layers.Layer]:
    return {l.name: l for l in model.layers if type(l).__name__ in ("Conv2D", "Dense", "DepthwiseConv2D")}


def group_weights(model: keras.Model, groups, layer_in, layer_out, kept: list[int]) -> int:
    """The weights (kernel entries) the network has when group g keeps ``kept[g]`` channels."""
    total = 0
    for name, layer in _weighted(model).items():
        k = layer.kernel.shape
        if type(layer).__name__ == "DepthwiseConv2D":
            total += int(k[0] * k[1]) * kept[layer_out[name]]
            continue
        per = int(np.prod(k[:-1])) // groups[layer_in[name]].size       # rows per input channel
        total += per * kept[layer_in[name]] * kept[layer_out[name]]
    return total


def _scores(model: keras.Model, groups, criterion: str) -> list[np.ndarray]:
    """Each group's channel scores: every producer's and depthwise member's column norm (l1 or l2) as a share of
    that layer's total, summed."""
    if criterion not in ("l1", "l2"):
        raise ConfigError(f"criterion {criterion!r}: matrix pruning of a network with merges scores channels by "
                          f"their columns' norms; allowed there: l1, l2")
    layers = _weighted(model)
    out = []
    for g in groups:
        s = np.zeros(g.size)
        for name in g.producers + g.followers:
            k = layers[name].kernel.numpy()
            w = k.reshape(-1, k.shape[2]) if name in g.followers else k.reshape(-1, k.shape[-1])
            col = np.abs(w).sum(0) if criterion == "l1" else np.sqrt(np.square(w).sum(0))
            s += col / max(float(col.sum()), 1e-30)
        out.append(s)
    return out


def _round(n: int, tile: int, size: int) -> int:
    """``n`` to the nearest whole number of ``tile``s (at least one), never above ``size``."""
    if size <= tile:
        return size
    m = max(tile, int(round(n / tile)) * tile)
    return m if m <= size else size // tile * tile


def select_channels(model: keras.Model, groups, layer_in, layer_out, ratio: float, array: ArrayConfig | None,
                    criterion: str = "l1") -> list[np.ndarray]:
    """The channels each group keeps (sorted indices): the same kept fraction q of every prunable group, the
    largest whose weights remove at least ``ratio`` of the network's, each count rounded to whole array column
    tiles where ``array`` is given; the highest-scoring channels."""
    total = group_weights(model, groups, layer_in, layer_out, [g.size for g in groups])
    budget = (1.0 - ratio) * total
    for q in np.linspace(1.0, 0.0, 2001):
        kept = [g.size if not g.prunable else
                (_round(max(1, round(q * g.size)), array.cols, g.size) if array else max(1, round(q * g.size)))
                for g in groups]
        if group_weights(model, groups, layer_in, layer_out, kept) <= budget:
            break
    scores = _scores(model, groups, criterion)
    return [np.sort(np.argsort(-s, kind="stable")[:k]) for s, k in zip(scores, kept)]


def tile_rows(model: keras.Model, rows: int, criterion: str = "l1") -> dict[str, list[int]]:
    """Per Conv2D or Dense layer of ``model`` whose matrix has more rows than the array (``rows``) but not a whole
    number of its row tiles: the rows it keeps (sorted), its highest-norm rows (l1 or l2, over all its filters) down
    to whole tiles; the others are set to zero in ``model``. Depthwise layers are mapped by channel, not by rows,
    and are left alone."""
    kept = {}
    for name, layer in _weighted(model).items():
        k = layer.kernel.numpy()
        w = k.reshape(-1, k.shape[-1])
        if type(layer).__name__ == "DepthwiseConv2D" or w.shape[0] <= rows or w.shape[0] % rows == 0:
            continue
        norm = np.abs(w).sum(1) if criterion == "l1" else np.sqrt(np.square(w).sum(1))
        kept[name] = np.sort(np.argsort(-norm, kind="stable")[:w.shape[0] // rows * rows]).tolist()
    apply_masks(model, _row_masks(model, kept))
    return kept


def _row_masks(model: keras.Model, kept: dict[str, list[int]]) -> dict[str, np.ndarray]:
    """Kernel-shaped keep-masks of the layers in ``kept`` (:func:`tile_rows`): zero on the rows they dropped."""
    out = {}
    for name, layer in _weighted(model).items():
        if name in kept:
            shape = tuple(layer.kernel.shape)
            mask = np.zeros((int(np.prod(shape[:-1])), shape[-1]), bool)
            mask[kept[name]] = True
            out[name] = mask.reshape(shape)
    return out


def _sliced(layer, cls: str, keep_in: np.ndarray, keep_out: np.ndarray, size_in: int) -> list[np.ndarray]:
    """The layer's kernel and bias restricted to the kept input and output channels."""
    k, b = layer.kernel.numpy(), layer.bias.numpy()
    if cls == "DepthwiseConv2D":
        return [k[:, :, keep_out, :], b[keep_out]]
    if cls == "Conv2D":
        return [k[:, :, keep_in, :][..., keep_out], b[keep_out]]
    per = k.shape[0] // size_in                     # a Dense after a Flatten: rows (position, channel)
    return [k.reshape(per, size_in, -1)[:, keep_in, :][..., keep_out].reshape(per * len(keep_in), -1), b[keep_out]]


def shrink_groups(model: keras.Model, groups, layer_in, layer_out, keep: list[np.ndarray]) -> keras.Model:
    """The smaller functional model of the same graph: each Conv2D/Dense with its kept filters or units, each
    depthwise layer with its kept channels, the weights the kept channels had."""
    graph = keras_graph(model)
    x = keras.Input(shape=tuple(graph.input_shape), name=model.inputs[0].name)
    tensors, weights = {INPUT: x}, {}
    for node in graph:
        layer = node.attrs["layer"]
        cls = type(layer).__name__
        cfg = layer.get_config()
        if cls in ("Conv2D", "Dense"):
            cfg["filters" if cls == "Conv2D" else "units"] = len(keep[layer_out[node.name]])
        new = type(layer).from_config(cfg)
        args = [tensors[s] for s in node.inputs]
        tensors[node.name] = new(args if len(args) > 1 else args[0])
        if node.name in layer_in:
            gi = layer_in[node.name]
            weights[node.name] = (new, _sliced(layer, cls, keep[gi], keep[layer_out[node.name]], groups[gi].size))
    out = keras.Model(x, tensors[graph.output.name], name=model.name)
    for new, w in weights.values():
        new.set_weights(w)
    return out


def zero_groups(model: keras.Model, groups, layer_out, keep: list[np.ndarray]) -> keras.Model:
    """A copy of ``model`` with the removed channels' columns and biases zero in every producer and depthwise
    member: what the smaller model computes, at full size."""
    from prunehw.model.network import strip_training_state

    clone = strip_training_state(model)
    for name, layer in _weighted(clone).items():
        g = layer_out[name]
        mask = np.zeros(groups[g].size, np.float32)
        mask[keep[g]] = 1.0
        k = layer.kernel.numpy()
        axis_mask = mask[:, None] if type(layer).__name__ == "DepthwiseConv2D" else mask
        layer.kernel.assign(k * axis_mask)
        layer.bias.assign(layer.bias.numpy() * mask)
    return clone


def prune_groups(model: keras.Model, data, schedule, *, criterion: str, array: ArrayConfig | None,
                 learning_rate: float, batch_size: int, desc: str = "matrix") -> tuple[keras.Model, dict]:
    """``model`` pruned by channel groups following ``schedule`` (each step to its ratio, then fine-tuned); returns
    the smaller model and a record of its groups (members and kept channels, for ``channel_groups.json``)."""
    from prunehw.model.train import fit

    groups, layer_in, layer_out = channel_groups(model)
    plan = schedule.plan()
    small, rows = model, {}
    keep = [np.arange(g.size) for g in groups]
    for step, (ratio, epochs) in enumerate(tqdm(plan, desc=f"{desc} steps", unit="step", leave=False)):
        # (each step selects on the full-size network holding the current weights, the removed channels zero)
        full = zero_groups(model, groups, layer_out, keep) if step == 0 else _expand(model, small, groups, layer_in,
                                                                                     layer_out, keep)
        keep = select_channels(full, groups, layer_in, layer_out, ratio, array if step == len(plan) - 1 else None,
                               criterion)
        small = shrink_groups(full, groups, layer_in, layer_out, keep)
        if array is not None and step == len(plan) - 1:      # (whole row tiles too, at the last step)
            rows = tile_rows(small, array.rows, criterion)
        if epochs:
            with keep_masks(small, _row_masks(small, rows)):
                fit(small, data, epochs, batch_size, learning_rate, desc=f"{desc} step {step + 1}/{len(plan)} epoch")
    record = {"version": 1, "groups": [
        {"size": g.size, "kept": k.tolist(), "prunable": g.prunable, "producers": g.producers,
         "depthwise": g.followers, "readers": [name for name, _ in g.readers]} for g, k in zip(groups, keep)],
        # the rows of the smaller model's matrices that layers whose rows were rounded to whole tiles keep
        "rows_kept": rows}
    return small, record


def _expand(model: keras.Model, small: keras.Model, groups, layer_in, layer_out, keep) -> keras.Model:
    """The full-size ``model`` holding ``small``'s weights at the kept channels, zeros elsewhere."""
    from prunehw.model.network import strip_training_state

    full = strip_training_state(model)
    big, little = _weighted(full), _weighted(small)
    for name, layer in big.items():
        cls = type(layer).__name__
        go, gi = layer_out[name], layer_in[name]
        k_small, b_small = little[name].kernel.numpy(), little[name].bias.numpy()
        k = np.zeros(layer.kernel.shape, np.float32)
        b = np.zeros(layer.bias.shape, np.float32)
        if cls == "DepthwiseConv2D":
            k[:, :, keep[go], :] = k_small
        elif cls == "Conv2D":
            k[np.ix_(range(k.shape[0]), range(k.shape[1]), keep[gi], keep[go])] = k_small
        else:
            per = k.shape[0] // groups[gi].size
            k3 = k.reshape(per, groups[gi].size, -1)
            k3[np.ix_(range(per), keep[gi], keep[go])] = k_small.reshape(per, len(keep[gi]), -1)
            k = k3.reshape(k.shape)
        b[keep[go]] = b_small
        layer.kernel.assign(k)
        layer.bias.assign(b)
    return full
