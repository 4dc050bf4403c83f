"""Quantization of a float model to the numeric contract (DESIGN §5), post-training, with calibration.

Per weighted layer: a power-of-two weight scale chosen so the largest weight
fits ``weight_bits`` signed bits; biases at accumulator precision (input frac
+ weight frac); an accumulator width derived from the integer weights so that
no input the format allows can overflow it (checked, not assumed); hidden
outputs requantized after ReLU to ``act_bits`` unsigned bits, whose integer
bits come from the largest activation seen on calibration images (a relu6's
cap, 6, recorded as ``relu_max`` and applied by the saturation); the last
layer's output stays at accumulator precision (the logits). Max and average
pooling pass the activation format through unchanged: neither the maximum nor
the (rounded) average of a window leaves its inputs' range.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from prunehw.core.errors import ModelFileError
from prunehw.core.graph import INPUT
from prunehw.export.kinds import KINDS, keras_kind

__all__ = ["quantize", "dequantized_model"]


def _weight_frac(w: np.ndarray, bits: int) -> int:
    peak = float(np.max(np.abs(w)))
    if peak == 0.0:
        return 0
    return math.floor(math.log2((2 ** (bits - 1) - 1) / peak))


def _act_int_bits(peak: float, magnitude_bits: int) -> int:
    """The fewest integer bits I whose format, with ``magnitude_bits`` bits above the sign, holds ``peak``
    unsaturated: its maximum 2**I * (1 - 2**-magnitude_bits) >= peak. (ceil(log2(peak)) alone saturated a peak
    that is exactly a power of two, or within one LSB below it.) Never negative: a peak below 1 gives every
    bit to the fraction."""
    if peak <= 0:
        return 0
    bits = max(0, math.floor(math.log2(peak)) + 1)
    while 2.0 ** bits * (1 - 2.0 ** -magnitude_bits) < peak:
        bits += 1
    return bits


def _input_magnitude(fmt: dict) -> int:
    return 2 ** fmt["bits"] - 1 if not fmt["signed"] else 2 ** (fmt["bits"] - 1)


def quantize(model: keras.Model, calib_x: np.ndarray, weight_bits: int | dict[str, int] = 8, act_bits: int = 8,
             rows_kept: dict[str, list[int]] | None = None) -> tuple[dict, dict, dict]:
    """(contract spec without version/hash, int weight matrices, int biases) of ``model``.

    ``calib_x``: uint8 images whose float activations set each output's integer bits.
    ``rows_kept``: for a matrix-pruned model, the rows of each layer's matrix
    that pruning kept; recorded in the contract (the hardware skips the others),
    after checking that every other row is zero.
    """
    from prunehw.model.activations import relu_cap, relu_kind
    from prunehw.model.data import to_float
    from prunehw.model.graph import keras_graph
    from prunehw.model.network import unsupported

    graph = keras_graph(model).require_chain("the numeric contract")
    layers = [node.attrs["layer"] for node in graph]
    kinds = [keras_kind(l) for l in layers]     # (None for a ReLU: fused into the layer before it)
    weighted_idx = [i for i, k in enumerate(kinds) if k and k.weighted]
    weighted_names = [layers[i].name for i in weighted_idx]
    if isinstance(weight_bits, dict):            # per-layer widths (a bit allocation): every weighted layer named
        unknown, missing = set(weight_bits) - set(weighted_names), set(weighted_names) - set(weight_bits)
        if unknown or missing:
            raise ValueError(f"weight_bits names layers {sorted(unknown)} not in the model and misses {sorted(missing)}; "
                             f"allowed: a width for each of {weighted_names}")
        layer_bits = dict(weight_bits)
    else:
        layer_bits = dict.fromkeys(weighted_names, weight_bits)
    if not all(isinstance(b, int) and 2 <= b <= 8 for b in layer_bits.values()) or not 2 <= act_bits <= 8:
        raise ValueError(f"weight_bits={weight_bits}, act_bits={act_bits}; allowed: 2..8 (the hardware's widest weight "
                         f"and activation lanes are 8 bits)")
    # float activations after every layer on the calibration set
    acts, x = {}, to_float(calib_x)
    for layer in layers:
        x = np.asarray(layer(x))
        acts[layer.name] = x
    fmt = {"bits": 8, "frac": 8, "signed": False}
    spec = {"input": {"shape": list(model.inputs[0].shape[1:]), **fmt}, "layers": []}
    weights, biases = {}, {}
    for i, (layer, k) in enumerate(zip(layers, kinds)):
        if k is None and relu_kind(layer) is None:
            raise ModelFileError(f"layer {layer.name!r} is a {type(layer).__name__}; the contract has no such kind "
                                 f"(allowed: {', '.join(sorted({c for kd in KINDS.values() for c in kd.keras}))}, ReLU)")
        refusal = unsupported(layer)
        if refusal:
            raise ModelFileError(f"layer {layer.name!r} {refusal}")
        if k is None and not (i and kinds[i - 1] and kinds[i - 1].weighted):
            # the contract has ReLU only as a weighted layer's output; another one would be left out silently
            raise ModelFileError(f"ReLU {layer.name!r} does not follow a Conv2D or Dense directly; the contract fuses "
                                 f"ReLU into the layer before it (put it right after the conv/dense)")
    # the graph's edges between contract entries: a fused ReLU is its weighted layer's output, so what reads the
    # ReLU reads that layer
    entry_of = {INPUT: INPUT}
    for i, (node, layer, kd) in enumerate(zip(graph, layers, kinds)):
        entry_of[node.name] = node.name if kd else entry_of[node.inputs[0]]
        edges = {"inputs": [entry_of[s] for s in node.inputs], "shape": list(node.shape)}
        if kd and kd.weighted:
            k = layer.kernel.numpy()
            w = k.reshape(-1, k.shape[-1]).astype(np.float64)
            b = layer.bias.numpy().astype(np.float64)
            if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
                raise ModelFileError(f"layer {layer.name!r} has NaN or inf weights; cannot quantize")
            wbits = layer_bits[layer.name]
            fw = _weight_frac(w, wbits)
            lim = 2 ** (wbits - 1)
            wq = np.clip(np.rint(w * 2.0 ** fw), -lim, lim - 1).astype(np.int64)
            facc = fmt["frac"] + fw
            bq = np.rint(b * 2.0 ** facc).astype(np.int64)
            bound = int((np.abs(wq).sum(axis=0) * _input_magnitude(fmt) + np.abs(bq)).max())
            acc_bits = bound.bit_length() + 1
            bias_bits = max(int(np.abs(bq).max()).bit_length() + 1, 2)
            last = i == weighted_idx[-1]
            relu_next = i + 1 < len(layers) and relu_kind(layers[i + 1]) is not None
            entry = {
                "name": layer.name, "type": kd.name,
                "rows": int(w.shape[0]), "out_channels": int(w.shape[1]),
                "in_channels": int(k.shape[2]) if k.ndim == 4 else int(k.shape[0]),
                "input": dict(fmt),
                # weights and biases are rounded to nearest, ties to even (np.rint); requantized activations
                # round half up (their ``rounding``): both rules are recorded, the golden model reads integers
                "weight": {"bits": wbits, "frac": fw, "rounding": "half_even"},
                "bias": {"bits": max(bias_bits, 2), "frac": facc, "rounding": "half_even"},
                "accum": {"bits": acc_bits, "frac": facc},
            }
            entry.update(kd.geometry(layer))
            if rows_kept and layer.name in rows_kept:
                kept = sorted(rows_kept[layer.name])
                dropped = np.setdiff1d(np.arange(w.shape[0]), kept)
                if np.any(wq[dropped] != 0):
                    raise ModelFileError(f"layer {layer.name!r}: rows dropped by matrix pruning hold non-zero weights")
                if len(kept) < w.shape[0]:
                    entry["rows_kept"] = kept
            if last:
                entry["output"] = {"bits": acc_bits, "frac": facc, "signed": True, "relu": relu_next,
                                   "name": layers[i + 1].name if relu_next else None}
            else:
                src = acts[layers[i + 1].name] if relu_next else acts[layer.name]
                peak = float(np.max(src)) if relu_next else float(np.max(np.abs(src)))
                ibits = _act_int_bits(peak, act_bits if relu_next else act_bits - 1) + (0 if relu_next else 1)
                entry["output"] = {"bits": act_bits, "frac": act_bits - ibits, "signed": not relu_next, "relu": relu_next,
                                   "name": layers[i + 1].name if relu_next else None,
                                   "rounding": "half_up", "saturation": True, "calibration_peak": peak}
            if relu_next and relu_cap(layers[i + 1]) is not None:
                entry["output"]["relu_max"] = relu_cap(layers[i + 1])     # (relu6: 6 is on any grid with frac >= -1)
            spec["layers"].append({**entry, **edges})
            weights[layer.name], biases[layer.name] = wq, bq
            fmt = {k2: entry["output"][k2] for k2 in ("bits", "frac", "signed")}
        elif kd:
            spec["layers"].append({**kd.entry(layer, fmt), **edges})
    return spec, weights, biases


def dequantized_model(model: keras.Model, contract) -> keras.Model:
    """A copy of ``model`` holding exactly the contract's values (w_q * 2**-frac) as float32.

    hls4ml must receive weights that its fixed-point types represent exactly;
    float32 holds them exactly while |integer| < 2**24, which is checked.
    """
    from prunehw.model.network import strip_training_state

    out = strip_training_state(model)
    by_name = {l["name"]: l for l in contract.weighted()}
    for layer in out.layers:
        if layer.name in by_name:
            spec = by_name[layer.name]
            wq, bq = contract.weights[layer.name], contract.biases[layer.name]
            if np.abs(bq).max(initial=0) >= 2 ** 24:
                raise ModelFileError(f"layer {layer.name!r}: bias integers need more than float32's 24-bit mantissa")
            layer.kernel.assign((wq * 2.0 ** -spec["weight"]["frac"]).reshape(layer.kernel.shape).astype(np.float32))
            layer.bias.assign((bq * 2.0 ** -spec["bias"]["frac"]).astype(np.float32))
    return out
