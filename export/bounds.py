"""Sound bounds on every weighted layer's accumulator over every input the contract allows, from its weights.

Interval arithmetic along the contract's graph, from the input's integer range (the pixels' [0, 255]): a weighted
layer's accumulator per output channel is lowest with each input at whichever end of its range its weight
prefers, highest at the other; its output's range is the requantization of those ends (ReLU, rounding and
saturation are monotone); a pooling (the maximum or the average of values in a range) and a flatten keep their
channel's range; a residual add's sum is bounded by its output's range. Exact for the first layer; an
over-estimate after it, since every input takes its own worst end.

The contract sizes each accumulator by these bounds (:func:`accumulator_bits`), so it is as wide as the values
it can hold and no wider: a bound on the weights alone (every input at its format's largest code) is several
times too large once the inputs are outputs of a ReLU and a saturation.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from prunehw.core.graph import INPUT
from prunehw.export.contract import output_range
from prunehw.export.kinds import kind, requantize, weighted

__all__ = ["accumulator_bits", "accumulator_bounds", "input_range", "interval"]

Bounds = tuple[np.ndarray, np.ndarray]


def input_range(fmt: dict, channels: int) -> Bounds:
    """The integer range of the network's input ``fmt`` {bits, signed}, per channel."""
    lo, hi = output_range(fmt)
    return np.full(channels, lo, np.int64), np.full(channels, hi, np.int64)


def interval(layer: dict, lo: np.ndarray, hi: np.ndarray, contract) -> Bounds:
    """A weighted layer's accumulator bounds per output channel when each input channel lies in [lo, hi]."""
    # (a depthwise convolution's matrix over its whole window: zeros where a channel reads another's)
    w, b = kind(layer).full_matrix(contract.weights[layer["name"]]), contract.biases[layer["name"]]
    # a matrix's rows repeat the channels: (ky, kx, c) for a convolution, (h, w, c) after a flatten
    l_in, h_in = np.tile(lo, w.shape[0] // len(lo)), np.tile(hi, w.shape[0] // len(lo))
    if kind(layer).windowed and layer.get("padding", "valid") != "valid":
        l_in, h_in = np.minimum(l_in, 0), np.maximum(h_in, 0)      # a padded tap reads 0
    acc_lo = b + np.where(w > 0, w * l_in[:, None], w * h_in[:, None]).sum(axis=0)
    acc_hi = b + np.where(w > 0, w * h_in[:, None], w * l_in[:, None]).sum(axis=0)
    return acc_lo, acc_hi


Tighten = Callable[[dict, Bounds, dict[str, Bounds]], "tuple[Bounds, str] | None"]


def accumulator_bounds(contract, tighten: Tighten | None = None) -> tuple[dict[str, Bounds], dict[str, str]]:
    """Per weighted layer, the lowest and highest accumulator each output channel can reach (int64 arrays), and
    how that was found. ``tighten(layer, bounds, found_so_far)`` may return tighter sound bounds for a layer and
    their name; what follows the layer is then bounded from them."""
    ranges = {INPUT: input_range(contract.input, contract.input["shape"][-1])}      # per tensor, per channel
    out: dict[str, Bounds] = {}
    how: dict[str, str] = {}
    read = {i for layer in contract.layers for i in layer["inputs"]}        # (the logits' range: not needed)
    for layer in contract.layers:
        name = layer["name"]
        if layer["type"] == "add":
            o, c = layer["output"], layer["shape"][-1]
            a, b = output_range(o)
            ranges[name] = (np.full(c, max(a, 0) if o["relu"] else a, np.int64), np.full(c, b, np.int64))
            continue
        if not weighted(layer):
            ranges[name] = ranges[layer["inputs"][0]]
            continue
        acc = interval(layer, *ranges[layer["inputs"][0]], contract)
        how[name] = "interval bound"
        better = tighten(layer, acc, out) if tighten is not None else None
        if better is not None:
            (lo, hi), how[name] = better
            acc = np.maximum(acc[0], lo), np.minimum(acc[1], hi)
        out[name] = acc
        if name in read:
            ranges[name] = tuple(requantize(v.astype(np.int64), layer["accum"]["frac"], layer["output"]) for v in acc)
    return out, how


def accumulator_bits(contract) -> dict[str, int]:
    """Per weighted layer, the signed width that holds every accumulator :func:`accumulator_bounds` allows, and its
    bias (at least 2 bits)."""
    bounds, _ = accumulator_bounds(contract)
    bits = {}
    for name, (lo, hi) in bounds.items():
        b = contract.biases[name]
        top = max(-int(lo.min()), int(hi.max()), int(np.abs(b).max(initial=0)))
        bits[name] = max(top.bit_length() + 1, 2)
    return bits
