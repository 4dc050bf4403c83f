"""Quantization of a float model to the numeric contract (DESIGN §5), post-training, with calibration.

Per weighted layer: a power-of-two weight scale chosen so the largest weight
fits ``weight_bits`` signed bits; biases at accumulator precision (input frac
+ weight frac); an accumulator width derived from the integer weights so that
no image can overflow it (interval bounds along the network from the pixels'
range through each earlier layer's requantized range,
:mod:`prunehw.export.bounds`: checked, not assumed); hidden
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
from prunehw.export.bounds import accumulator_bits
from prunehw.export.contract import Contract
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

    graph = keras_graph(model)
    nodes = list(graph)
    layers = [node.attrs["layer"] for node in nodes]
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
    # a ReLU is fused into the layer it reads (a weighted layer's or an add's output) when it is that layer's only
    # reader: then nothing reads the value before the ReLU
    fused = {}                                   # layer name -> the ReLU fused into its output
    for i, (node, layer, k) in enumerate(zip(nodes, layers, kinds)):
        if k is None and relu_kind(layer) is None:
            raise ModelFileError(f"layer {layer.name!r} is a {type(layer).__name__}; the contract has no such kind "
                                 f"(allowed: {', '.join(sorted({c for kd in KINDS.values() for c in kd.keras}))}, ReLU)")
        refusal = unsupported(layer)
        if refusal:
            raise ModelFileError(f"layer {layer.name!r} {refusal}")
        if k is None:
            src = node.inputs[0]
            kd = keras_kind(graph.node(src).attrs["layer"]) if src != INPUT else None
            if not (kd and (kd.weighted or kd.name == "add") and len(graph.readers(src)) == 1):
                # the contract has ReLU only as a weighted layer's (or an add's) output; another one would be left out
                raise ModelFileError(f"ReLU {layer.name!r} does not follow a Conv2D, Dense or Add that nothing else "
                                     f"reads; the contract fuses ReLU into the layer before it (put it right after "
                                     f"the conv/dense/add)")
            fused[src] = layer
    # float activations after every layer on the calibration set
    acts: dict[str, np.ndarray] = {}

    def run(node, args):
        acts[node.name] = np.asarray(node.attrs["layer"](args if len(args) > 1 else args[0]))
        return acts[node.name]

    graph.evaluate(to_float(calib_x), run)
    spec = {"input": {"shape": list(model.inputs[0].shape[1:]), "bits": 8, "frac": 8, "signed": False}, "layers": []}
    fmt_of = {INPUT: {"bits": 8, "frac": 8, "signed": False}}     # the format of each entry's output
    weights, biases = {}, {}

    def hidden_output(name: str) -> dict:
        """A hidden (requantized) output's format: ``act_bits`` wide, unsigned after a ReLU, its integer bits
        from the largest value the calibration images give (after the ReLU where one is fused)."""
        relu = fused.get(name)
        src = acts[relu.name] if relu is not None else acts[name]
        peak = float(np.max(src)) if relu is not None else float(np.max(np.abs(src)))
        ibits = _act_int_bits(peak, act_bits if relu is not None else act_bits - 1) + (0 if relu is not None else 1)
        out = {"bits": act_bits, "frac": act_bits - ibits, "signed": relu is None, "relu": relu is not None,
               "name": relu.name if relu is not None else None, "rounding": "half_up", "saturation": True,
               "calibration_peak": peak}
        if relu is not None and relu_cap(relu) is not None:
            out["relu_max"] = relu_cap(relu)      # (relu6: 6 is on any grid with frac >= -1)
        return out

    # the graph's edges between contract entries: a fused ReLU is its layer's output, so what reads the ReLU reads
    # that layer
    entry_of = {INPUT: INPUT}
    for i, (node, layer, kd) in enumerate(zip(nodes, layers, kinds)):
        entry_of[node.name] = node.name if kd else entry_of[node.inputs[0]]
        if not kd:
            continue
        in_names = [entry_of[s] for s in node.inputs]
        edges = {"inputs": in_names, "shape": list(node.shape)}
        fmt = fmt_of[in_names[0]]
        if kd.weighted:
            k = layer.kernel.numpy()
            w = kd.matrix(k).astype(np.float64)
            b = layer.bias.numpy().astype(np.float64)
            if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
                raise ModelFileError(f"layer {layer.name!r} has NaN or inf weights; cannot quantize")
            wbits = layer_bits[layer.name]
            fw = _weight_frac(w, wbits)
            lim = 2 ** (wbits - 1)
            wq = np.clip(np.rint(w * 2.0 ** fw), -lim, lim - 1).astype(np.int64)
            facc = fmt["frac"] + fw
            bq = np.rint(b * 2.0 ** facc).astype(np.int64)
            acc_bits = None               # (sized below, once every layer's range is known)
            bias_bits = max(int(np.abs(bq).max()).bit_length() + 1, 2)
            relu = fused.get(layer.name)
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
            if i == weighted_idx[-1]:                 # the logits: at accumulator precision
                entry["output"] = {"bits": acc_bits, "frac": facc, "signed": True, "relu": relu is not None,
                                   "name": relu.name if relu is not None else None}
                if relu is not None and relu_cap(relu) is not None:
                    entry["output"]["relu_max"] = relu_cap(relu)
            else:
                entry["output"] = hidden_output(layer.name)
            spec["layers"].append({**entry, **edges})
            weights[layer.name], biases[layer.name] = wq, bq
        elif kd.name == "add":
            entry = {"name": layer.name, "type": "add", "input": [dict(fmt_of[n]) for n in in_names],
                     "output": hidden_output(layer.name)}
            spec["layers"].append({**entry, **edges})
        else:
            spec["layers"].append({**kd.entry(layer, fmt), **edges})
        fmt_of[node.name] = {k2: spec["layers"][-1]["output"][k2] for k2 in ("bits", "frac", "signed")} \
            if "output" in spec["layers"][-1] else dict(fmt)
    # each accumulator as wide as the values it can hold: bounded along the graph from the pixels' range through
    # every earlier layer's requantized range (the outputs' formats do not depend on the widths); the logits stay
    # at their accumulator's width
    widths = accumulator_bits(Contract(spec, weights, biases))
    for entry in spec["layers"]:
        if entry["name"] in widths:
            entry["accum"]["bits"] = widths[entry["name"]]
            if entry["name"] == layers[weighted_idx[-1]].name:
                entry["output"]["bits"] = widths[entry["name"]]
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
