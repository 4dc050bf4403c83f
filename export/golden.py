"""The golden integer model: the numeric contract executed in numpy, the reference for everything else.

Integer semantics throughout; each layer's arithmetic is its kind's (:mod:`prunehw.export.kinds`). Matrix
products run in float64 BLAS only when the contract's accumulator width (derived from the weights, so that no
allowed input can exceed it) is at most 53 bits, which makes every product and partial sum an exactly
representable integer; otherwise they run in int64.
"""

from __future__ import annotations

import numpy as np

from prunehw.core.errors import DataError
from prunehw.export.contract import output_range
from prunehw.export.kinds import kind, requantize, weighted

__all__ = ["accumulate", "apply_layer", "golden", "golden_accuracy", "layer_events", "requantize"]


def accumulate(layer: dict, a: np.ndarray, contract) -> np.ndarray:
    """A weighted layer's accumulators for the integer input ``a``: its inputs (a convolution's windows) times its
    integer weights, plus its bias, exact in int64, before any ReLU or requantization."""
    return kind(layer).accumulate(layer, a, contract)


def apply_layer(layer: dict, a: np.ndarray, contract) -> np.ndarray:
    """One layer of the contract on the integer input ``a`` (N, ...), as the hardware computes it (its kind's
    arithmetic, :mod:`prunehw.export.kinds`)."""
    return kind(layer).apply(layer, a, contract)


def _steps(contract, before=None):
    """(the contract's graph, the step that computes one node of it: its entry's arithmetic on its inputs' values);
    ``before(layer, inputs)`` is called first, where given."""
    by_name = {l["name"]: l for l in contract.layers}

    def step(node, args):
        layer = by_name[node.name]
        if before is not None:
            before(layer, args)
        return kind(layer).evaluate(layer, args, contract)     # (an add reads two)

    return contract.graph, step


def layer_input(contract, x: np.ndarray, name: str) -> np.ndarray:
    """The integer input of weighted layer ``name`` on images ``x`` (N, H, W[, C]), the layers before it (along the
    contract's graph: an add reads two) computed as :func:`golden` computes them."""
    x = x[..., None] if x.ndim == 3 else x
    graph, step = _steps(contract)
    return graph.inputs_of(name, np.asarray(x, np.int64), step)[0]


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
    graph, step = _steps(contract)
    for start in range(0, len(x), batch):
        a = x[start:start + batch].astype(np.int64)
        if return_all:
            a, every = graph.evaluate(a, step, keep=True)
            for name, v in every.items():
                outs.setdefault(name, []).append(v)
        else:
            a = graph.evaluate(a, step)
        logits.append(a)
    out = np.concatenate(logits) if logits else np.zeros((0, contract.weighted()[-1]["out_channels"]), np.int64)
    if return_all:
        return out, {k: np.concatenate(v) for k, v in outs.items()}
    return out



def golden_accuracy(contract, x: np.ndarray, y: np.ndarray) -> float:
    """The fraction of images ``x`` whose golden logits' largest is at the label ``y``."""
    return float(np.mean(golden(contract, x).argmax(axis=1) == y))


#: Events of one layer's arithmetic that a test stimulus should make happen, so that a design error in the
#: logic that handles them shows: an accumulator that ReLU clamps to zero, a rounding tie (exactly half an
#: output LSB discarded), a requantized value beyond the output range (saturation), and an accumulator that
#: reaches into its top bits (within 1/8 of its range: carries through its widest adders).
EVENTS = ("relu_clamp", "rounding_tie", "saturation", "accumulator_top")


def layer_events(contract, x: np.ndarray, batch: int = 500) -> dict[str, np.ndarray]:
    """{``<layer>:<event>``: bool per image} for every weighted layer and every event of :data:`EVENTS` that its
    arithmetic can have (no rounding or saturation at the logits), computed with the golden model's own steps."""
    x = x[..., None] if x.ndim == 3 else x
    out: dict[str, list] = {}
    last_name = contract.weighted()[-1]["name"]

    def events(layer, args):
        if not weighted(layer):
            return
        acc = accumulate(layer, args[0], contract)
        flat = acc.reshape(len(acc), -1)
        o, name = layer["output"], layer["name"]
        found = {"accumulator_top": (np.abs(flat) >= 2 ** (layer["accum"]["bits"] - 4)).any(axis=1)}
        last = name == last_name
        if not last:
            relu = np.maximum(flat, 0) if o["relu"] else flat
            shift = layer["accum"]["frac"] - o["frac"]
            if o["relu"]:
                found["relu_clamp"] = (flat < 0).any(axis=1)
            if shift > 0:
                found["rounding_tie"] = ((relu & ((1 << shift) - 1)) == (1 << (shift - 1))).any(axis=1)
            q = (relu + (1 << (shift - 1))) >> shift if shift > 0 else relu << (-shift)
            lo, hi = output_range(o)
            found["saturation"] = ((q > hi) | (q < lo)).any(axis=1)
        for event, hit in found.items():
            out.setdefault(f"{name}:{event}", []).append(hit)

    graph, step = _steps(contract, before=events)
    for start in range(0, len(x), batch):
        graph.evaluate(x[start:start + batch].astype(np.int64), step)
    return {k: np.concatenate(v) for k, v in out.items()}
