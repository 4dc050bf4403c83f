"""A user's own Keras model, rewritten into the layers the flow implements, computing the same function.

Small CNNs and MLPs are usually written with conveniences the hardware does not need as layers of their
own. :func:`normalize` rewrites them, layer by layer, into an equivalent sequential model of Conv2D and
Dense (linear), ReLU, MaxPooling2D, AveragePooling2D and Flatten:

- an activation fused into Conv2D/Dense (``relu``; ``linear``) becomes a separate ReLU layer (or nothing);
- ``ReLU`` and ``Activation("relu")`` layers stay ReLUs, ``Activation("linear")`` goes;
- a ``softmax`` at the very end (fused or a layer of its own) is dropped: the flow works on logits, and
  softmax does not change their argmax, so accuracy is unchanged (the notes say so);
- ``Dropout`` (and the other inference no-ops: ``GaussianNoise``, ``GaussianDropout``, ``AlphaDropout``,
  ``SpatialDropout2D``) go;
- ``BatchNormalization`` right after a Conv2D or Dense (before or after its fused activation's place) is
  folded into that layer's kernel and bias: ``gamma * (x - mean) / sqrt(var + eps) + beta``.

Conv2D keeps its padding (``valid`` or ``same``) and its stride (the same both ways). MaxPooling2D and
AveragePooling2D stay as they are where their window is square, their strides equal it (Keras' default) and their
padding is ``valid``; an average's window must be a power of two (1, 2, 4, 8: its division is a shift). Anything
else (another activation, a BatchNormalization with no layer before it to fold into, non-square kernels or strides,
dilation, other poolings, other layer types) is refused with one line naming the layer and what is supported.
Each rewrite is listed in the returned notes, for the report.
"""

from __future__ import annotations

import keras
import numpy as np

from prunehw.core.errors import ModelFileError
from prunehw.model.network import unsupported_conv, unsupported_pool

__all__ = ["normalize"]

_NO_OPS = ("Dropout", "GaussianNoise", "GaussianDropout", "AlphaDropout", "SpatialDropout1D", "SpatialDropout2D")
_SUPPORTED = ("Conv2D (padding valid/same, square strides)", "Dense", "ReLU", "MaxPooling2D",
              "AveragePooling2D (power-of-two window)", "Flatten", "Activation (relu, linear, softmax last)",
              "BatchNormalization (after Conv2D/Dense)", "Dropout")


def _activation_name(layer) -> str:
    act = getattr(layer, "activation", None)
    return getattr(act, "__name__", str(act)) if act is not None else "linear"


def normalize(model: keras.Model, where: str = "model") -> tuple[keras.Model, list[str]]:
    """(an equivalent model in the supported layers, notes on each rewrite); ``ModelFileError`` if it cannot be."""
    src = [l for l in model.layers if type(l).__name__ != "InputLayer"]
    plan: list[tuple[str, dict, list]] = []    # (kind, config, weights) of the rewritten layers
    notes: list[str] = []
    last_weighted = max((i for i, l in enumerate(src) if type(l).__name__ in ("Conv2D", "Dense")), default=-1)
    for i, layer in enumerate(src):
        kind, name = type(layer).__name__, layer.name
        tail = all(type(l).__name__ in _NO_OPS or (type(l).__name__ == "Activation" and _activation_name(l) in
                                                  ("softmax", "linear")) for l in src[i + 1:])
        if kind in ("Conv2D", "Dense"):
            refusal = unsupported_conv(layer) if kind == "Conv2D" else None
            if refusal:
                raise ModelFileError(f"{where}: conv layer {name!r} {refusal}")
            act = _activation_name(layer)
            if act not in ("linear", "relu") and not (act == "softmax" and i == last_weighted and tail):
                raise ModelFileError(f"{where}: layer {name!r} fuses activation {act!r}; supported: relu, linear, "
                                     f"and softmax on the last layer")
            cfg = {"name": name}
            if kind == "Conv2D":
                cfg.update(filters=layer.filters, kernel_size=layer.kernel_size[0], strides=layer.strides[0],
                           padding=layer.padding)
            else:
                cfg.update(units=layer.units)
            w = layer.get_weights()
            kernel, bias = w[0], (w[1] if len(w) > 1 else np.zeros(w[0].shape[-1], w[0].dtype))
            if len(w) == 1:
                notes.append(f"{name}: no bias in the model; a zero bias added")
            plan.append((kind, cfg, [kernel, bias]))
            if act == "relu":
                plan.append(("ReLU", {"name": f"{name}_relu"}, []))
                notes.append(f"{name}: fused relu split into its own ReLU layer")
            elif act == "softmax":
                notes.append(f"{name}: final softmax dropped (the flow works on logits; argmax, so accuracy, unchanged)")
        elif kind == "BatchNormalization":
            j = len(plan) - 1     # (after a ReLU it cannot be folded: relu and the affine map do not commute)
            if j < 0 or plan[j][0] not in ("Conv2D", "Dense"):
                raise ModelFileError(f"{where}: BatchNormalization {name!r} does not follow a Conv2D or Dense directly; "
                                     f"supported: BatchNormalization right after Conv2D/Dense (it is folded into it)")
            gamma, beta, mean, var = (layer.get_weights() if layer.scale and layer.center else _bn_weights(layer))
            scale = gamma / np.sqrt(var + layer.epsilon)
            kernel, bias = plan[j][2]
            plan[j] = (plan[j][0], plan[j][1], [kernel * scale, (bias - mean) * scale + beta])
            notes.append(f"{name}: batch normalization folded into {plan[j][1]['name']!r}")
        elif kind == "ReLU":
            if layer.max_value is not None or float(layer.negative_slope) != 0.0 or float(layer.threshold) != 0.0:
                raise ModelFileError(f"{where}: ReLU {name!r} has max_value/negative_slope/threshold; supported: plain ReLU")
            plan.append(("ReLU", {"name": name}, []))
        elif kind == "Activation":
            act = _activation_name(layer)
            if act == "relu":
                plan.append(("ReLU", {"name": name}, []))
                notes.append(f"{name}: Activation('relu') as a ReLU layer")
            elif act == "linear":
                notes.append(f"{name}: Activation('linear') dropped (identity)")
            elif act == "softmax" and tail:
                notes.append(f"{name}: final softmax dropped (the flow works on logits; argmax, so accuracy, unchanged)")
            else:
                raise ModelFileError(f"{where}: Activation {name!r} is {act!r}; supported: relu, linear, softmax at the end")
        elif kind in _NO_OPS:
            notes.append(f"{name}: {kind} dropped (no effect at inference)")
        elif kind in ("MaxPooling2D", "AveragePooling2D"):
            refusal = unsupported_pool(layer)
            if refusal:
                raise ModelFileError(f"{where}: {kind} {name!r} {refusal}")
            plan.append((kind, {"name": name, "pool_size": layer.pool_size[0]}, []))
        elif kind == "Flatten":
            plan.append(("Flatten", {"name": name}, []))
        else:
            raise ModelFileError(f"{where}: layer {name!r} has unsupported type {kind}; supported: {', '.join(_SUPPORTED)}")
    return _build(model.inputs[0].shape[1:], plan), notes


def _bn_weights(layer) -> tuple:
    """gamma, beta, mean, var of a BatchNormalization without scale and/or center (their defaults 1 and 0)."""
    w = list(layer.get_weights())
    n = w[-1].shape[0]
    gamma = w.pop(0) if layer.scale else np.ones(n, w[-1].dtype)
    beta = w.pop(0) if layer.center else np.zeros(n, w[-1].dtype)
    mean, var = w
    return gamma, beta, mean, var


def _build(input_shape, plan) -> keras.Model:
    layers: list = [keras.Input(shape=tuple(input_shape))]
    for kind, cfg, _ in plan:
        if kind == "Conv2D":
            layers.append(keras.layers.Conv2D(cfg["filters"], cfg["kernel_size"], strides=cfg["strides"],
                                              padding=cfg["padding"], name=cfg["name"]))
        elif kind == "Dense":
            layers.append(keras.layers.Dense(cfg["units"], name=cfg["name"]))
        elif kind == "ReLU":
            layers.append(keras.layers.ReLU(name=cfg["name"]))
        elif kind in ("MaxPooling2D", "AveragePooling2D"):
            layers.append(getattr(keras.layers, kind)(cfg["pool_size"], name=cfg["name"]))
        else:
            layers.append(keras.layers.Flatten(name=cfg["name"]))
    out = keras.Sequential(layers, name="user_model")
    for (kind, cfg, weights), layer in zip(plan, out.layers):
        if weights:
            layer.set_weights([np.asarray(w, dtype=np.float32) for w in weights])
    return out
