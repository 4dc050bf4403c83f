"""Quantization-aware fine-tuning: train a float model through the numeric contract's own arithmetic.

The forward pass is the contract's (``export.quantize`` chooses the formats from the current weights and the
calibration images, again at every epoch): each weight is rounded to its layer's power-of-two grid, ties to
even, and clipped to ``weight_bits`` signed bits; each bias to the accumulator's grid; each hidden output goes
through its ReLU (capped at 6 for relu6), is rounded half up to its activation format and saturated to ``act_bits``; an average pooling
rounds half up in its input's format; the logits stay at accumulator precision. Rounding passes the gradient
straight through (the straight-through estimator), saturation passes none outside the range. Pruned weights
(exact zeros on entry) stay zero. Afterwards the ordinary post-training quantization writes the contract from
the fine-tuned weights, with the formats the last epoch trained with, so the integers the hardware computes are
the ones the fine-tuning saw (up to float32 sums in training).

Written for this contract rather than taken from hgq2 or QKeras: those learn per-layer bit widths and use
their own quantizers, which would need forcing onto the contract's power-of-two scales and rounding rules.
"""

from __future__ import annotations

import keras
import numpy as np

from prunehw.core.graph import INPUT
from prunehw.export.contract import output_range
from prunehw.export.kinds import fake_quant, keras_kind, weighted
from prunehw.export.quantize import quantize

__all__ = ["qat_finetune"]


def _forward(model: keras.Model, formats: dict, masks: dict, x):
    """The contract's arithmetic on float images ``x`` (pixels / 256), differentiable in the model's weights; each
    layer as its kind says (:mod:`prunehw.export.kinds`), along the model's graph: a residual ``Add`` sums its two
    inputs (each on its own grid: exact) and requantizes the sum as its contract entry says (its ReLU, where one
    follows, fused)."""
    import tensorflow as tf

    from prunehw.model.graph import keras_graph

    # per tensor: (its value, its format's fractional bits (for an average pooling), whether its ReLU is done)
    graph = keras_graph(model)
    values = {INPUT: (x, 8, False)}
    for node in graph:
        layer = node.attrs["layer"]
        args = [values[s] for s in node.inputs]
        a, frac, relu_done = args[0]
        kd = keras_kind(layer)
        if kd and kd.weighted:
            f = formats[layer.name]
            lim = 2 ** (f["weight"]["bits"] - 1)
            k = fake_quant(layer.kernel, f["weight"]["frac"], -lim, lim - 1, half_up=False) * masks[layer.name]
            b = fake_quant(layer.bias, f["accum"]["frac"], None, None, half_up=False)
            y = kd.qat_product(layer, a, k) + b
            out = f["output"]
            if out.get("rounding") is None:          # the logits: accumulator precision
                a = tf.nn.relu(y) if out["relu"] else y
            else:                                   # (a relu6's cap is in the output's range)
                a = fake_quant(tf.nn.relu(y) if out["relu"] else y, out["frac"], *output_range(out), half_up=True)
            values[node.name] = (a, out["frac"], out["relu"])
        elif kd is None:                            # a ReLU: done with the layer before it, unless it follows none
            values[node.name] = (a if relu_done else layer(a), frac, False)
        elif kd.name == "add":
            out = formats[layer.name]["output"]
            total = args[0][0] + args[1][0]
            a = fake_quant(tf.nn.relu(total) if out["relu"] else total, out["frac"], *output_range(out), half_up=True)
            values[node.name] = (a, out["frac"], out["relu"])
        else:
            values[node.name] = (kd.qat_forward(layer, a, frac), frac, relu_done)
    return values[graph.output.name][0]


def qat_finetune(model: keras.Model, x_train: np.ndarray, y_train: np.ndarray, calib_x: np.ndarray,
                 weight_bits: int | dict[str, int],
                 act_bits: int, epochs: int, batch_size: int, learning_rate: float, seed: int,
                 desc: str = "QAT epoch") -> list[dict]:
    """Fine-tune ``model`` (in place) through the contract's arithmetic at ``weight_bits`` (one width, or one per
    layer name) and ``act_bits``; returns per
    epoch the training loss. ``x_train``: uint8 images; ``calib_x``: the calibration images of ``quantize``."""
    import tensorflow as tf
    from tqdm.auto import tqdm

    from prunehw.model.data import to_float
    from prunehw.model.graph import keras_graph

    keras_graph(model, "quantization-aware fine-tuning")        # (a model with no layer graph: one line)
    matrices = [l for l in model.layers if (k := keras_kind(l)) and k.weighted]
    masks = {l.name: tf.constant((l.kernel.numpy() != 0).astype(np.float32)) for l in matrices}
    variables = [v for l in matrices for v in (l.kernel, l.bias)]
    opt = keras.optimizers.Adam(learning_rate)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    rng = np.random.default_rng(seed)
    history = []
    for epoch in range(epochs):
        spec, _, _ = quantize(model, calib_x, weight_bits, act_bits)
        formats = {l["name"]: l for l in spec["layers"] if weighted(l) or l["type"] == "add"}

        @tf.function
        def step(xb, yb, formats=formats):
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, _forward(model, formats, masks, xb))
            opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
            return loss

        order = rng.permutation(len(x_train))
        losses = []
        for s in tqdm(range(0, len(order), batch_size), desc=f"{desc} {epoch + 1}/{epochs}", unit="batch", leave=False):
            idx = order[s:s + batch_size]
            losses.append(float(step(tf.constant(to_float(x_train[idx])), tf.constant(y_train[idx]))))
        for layer in matrices:                       # (pruned weights stay exactly zero)
            layer.kernel.assign(layer.kernel * masks[layer.name])
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses))})
    return history
