"""The network as data: build a Keras model from ``NetworkConfig``, load and check saved models.

Only Conv2D (square kernels; valid or same padding; the same stride both ways; no dilation), Dense, ReLU (plain, or
capped at 6: see ``model/activations.py``),
MaxPooling2D, AveragePooling2D (a power-of-two window) and Flatten are supported, since those are what the matrix form, the numeric contract and the
hardware implement; anything else is refused with a clear error.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras

import numpy as np

from prunehw.core.config import NetworkConfig
from prunehw.core.errors import ConfigError, ModelFileError
from prunehw.core.geometry import conv_geometry
from prunehw.model.activations import relu_layer, relu_refusal

__all__ = ["build_model", "load_model", "save_model", "prunable_layers", "check_finite", "check_fits", "check_supported", "unsupported_conv", "unsupported_pool", "strip_training_state", "weight_counts", "set_seed"]

_KERAS_TYPES = {
    "Conv2D": "conv2d",
    "Dense": "dense",
    "ReLU": "relu",
    "MaxPooling2D": "maxpool2d",
    "AveragePooling2D": "avgpool2d",
    "Flatten": "flatten",
    "InputLayer": "input",
}


def set_seed(seed: int) -> None:
    """Fix Python, numpy and TensorFlow randomness and make TF ops deterministic."""
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def _layer_names(cfg: NetworkConfig) -> list[str]:
    counts: dict[str, int] = {}
    names = []
    stem = {"conv2d": "conv", "dense": "dense", "relu": "relu", "relu6": "relu6", "maxpool2d": "pool", "avgpool2d": "avgpool",
            "flatten": "flatten"}
    for spec in cfg.layers:
        counts[spec.type] = counts.get(spec.type, 0) + 1
        names.append(spec.name or f"{stem[spec.type]}{counts[spec.type]}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"network.layers: layer name {dup[0]!r} is used twice")
    return names


def build_model(cfg: NetworkConfig, input_shape: tuple[int, int, int], n_classes: int, seed: int) -> keras.Model:
    """Build the float network, checking that every layer fits the shape it receives."""
    set_seed(seed)
    shape = tuple(input_shape)
    layers: list[keras.layers.Layer] = [keras.Input(shape=shape, name="image")]
    for spec, name in zip(cfg.layers, _layer_names(cfg)):
        if spec.type == "conv2d":
            if len(shape) != 3:
                raise ConfigError(f"network layer {name!r} (conv2d) needs an H x W x C input, got shape {shape}")
            if spec.padding == "valid" and spec.kernel > min(shape[:2]):
                raise ConfigError(f"network layer {name!r}: kernel {spec.kernel} is larger than its {shape[0]}x{shape[1]} input "
                                  f"(valid padding); use a smaller kernel or padding = \"same\"")
            layers.append(keras.layers.Conv2D(spec.filters, spec.kernel, strides=spec.stride, padding=spec.padding, name=name))
            oh, ow, _, _ = conv_geometry(shape[0], shape[1], spec.kernel, spec.stride, spec.padding)
            shape = (oh, ow, spec.filters)
        elif spec.type in ("maxpool2d", "avgpool2d"):
            if len(shape) != 3 or spec.pool > min(shape[:2]):
                raise ConfigError(f"network layer {name!r}: pool {spec.pool} does not fit input shape {shape}")
            pooling = keras.layers.MaxPooling2D if spec.type == "maxpool2d" else keras.layers.AveragePooling2D
            layers.append(pooling(spec.pool, name=name))
            shape = (shape[0] // spec.pool, shape[1] // spec.pool, shape[2])
        elif spec.type == "flatten":
            layers.append(keras.layers.Flatten(name=name))
            shape = (int(np.prod(shape)),)
        elif spec.type in ("relu", "relu6"):
            layers.append(relu_layer(spec.type, name))
        elif spec.type == "dense":
            if len(shape) != 1:
                raise ConfigError(f"network layer {name!r} (dense) needs a flat input, got shape {shape}; add a flatten layer before it")
            layers.append(keras.layers.Dense(spec.units, name=name))
            shape = (spec.units,)
    if shape != (n_classes,):
        raise ConfigError(f"network: the last dense layer has {shape[0]} units but the data set has {n_classes} classes")
    return keras.Sequential(layers, name="prunehw_cnn")


def unsupported_conv(layer) -> str | None:
    """What of a Keras Conv2D the flow cannot carry (a phrase to follow its name), or None if it can.

    Supported: square kernels, ``valid`` or ``same`` padding, the same stride both ways, no dilation, one
    group, channels last.
    """
    k, s, d = tuple(layer.kernel_size), tuple(layer.strides), tuple(layer.dilation_rate)
    supported = "supported: square kernels, padding valid or same, square strides (s, s), dilation 1"
    if k[0] != k[1]:
        return f"has a {k} kernel; {supported}"
    if layer.padding not in ("valid", "same"):
        return f"uses padding {layer.padding!r}; {supported}"
    if s[0] != s[1]:
        return f"uses strides {s}; {supported}"
    if d != (1, 1):
        return f"uses dilation_rate {d}; {supported}"
    if getattr(layer, "groups", 1) != 1:
        return f"uses groups={layer.groups}; {supported}, groups 1"
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return f"uses data_format {layer.data_format!r}; {supported}, channels_last"
    return None


def unsupported_pool(layer) -> str | None:
    """What of a Keras MaxPooling2D/AveragePooling2D the flow cannot carry (a phrase to follow its name), or None.

    Supported: square windows, strides equal to the window (Keras' default), ``valid`` padding, channels last;
    an average's window a power of two (its division is a shift: 1, 2, 4, 8, ...).
    """
    p, s = tuple(layer.pool_size), tuple(layer.strides)
    avg = isinstance(layer, keras.layers.AveragePooling2D)
    supported = ("supported: square windows, strides equal to the window, padding valid"
                 + (", a power-of-two window (1, 2, 4, 8, ...)" if avg else ""))
    if p[0] != p[1]:
        return f"has a {p} window; {supported}"
    if s != p:
        return f"is {p} with strides {s}; {supported}"
    if layer.padding != "valid":
        return f"uses padding {layer.padding!r}; {supported}"
    if avg and p[0] & (p[0] - 1):
        return f"has a {p} window, not a power of two; {supported}"
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return f"uses data_format {layer.data_format!r}; {supported}, channels_last"
    return None


def check_supported(model: keras.Model, where: str) -> None:
    for layer in model.layers:
        kind = type(layer).__name__
        if kind not in _KERAS_TYPES:
            raise ModelFileError(
                f"{where}: layer {layer.name!r} has unsupported type {kind}; allowed: Conv2D, Dense, ReLU, MaxPooling2D, "
                f"AveragePooling2D, Flatten"
            )
        if kind == "Conv2D":
            conv_refusal = unsupported_conv(layer)
            if conv_refusal:
                raise ModelFileError(f"{where}: conv layer {layer.name!r} {conv_refusal}")
        if kind in ("MaxPooling2D", "AveragePooling2D"):
            pool_refusal = unsupported_pool(layer)
            if pool_refusal:
                raise ModelFileError(f"{where}: {kind} {layer.name!r} {pool_refusal}")
        if kind == "ReLU" and relu_refusal(layer):
            raise ModelFileError(f"{where}: ReLU {layer.name!r} {relu_refusal(layer)}")
        if kind in ("Conv2D", "Dense") and layer.activation.__name__ != "linear":
            raise ModelFileError(f"{where}: layer {layer.name!r} fuses activation {layer.activation.__name__!r}; use a separate ReLU layer")


def check_finite(model: keras.Model, where: str) -> None:
    """Refuse weights holding NaN or inf."""
    for layer in model.layers:
        for var in layer.weights:
            if not np.all(np.isfinite(var.numpy())):
                raise ModelFileError(f"{where}: layer {layer.name!r} weight {var.name!r} holds NaN or inf values")


def check_fits(model: keras.Model, data, where: str) -> None:
    """Refuse a model whose input shape or class count differs from the data set's."""
    got = tuple(model.inputs[0].shape[1:])
    if got != tuple(data.input_shape):
        raise ModelFileError(f"{where}: model input shape {got} does not match the data's images {tuple(data.input_shape)}")
    last = model.layers[-1]
    if not isinstance(last, keras.layers.Dense):
        raise ModelFileError(f"{where}: the last layer {last.name!r} is {type(last).__name__}; allowed: a Dense layer "
                             f"giving the logits (one per class)")
    units = last.units
    if units != data.n_classes:
        raise ModelFileError(f"{where}: model has {units} outputs but the data set has {data.n_classes} classes")


def load_model(path: Path | str, supported: bool = True, what: str = "model file") -> keras.Model:
    """Load a ``.keras`` file, with clear errors for missing, corrupt or unusable files (weights that are not
    finite; with ``supported``, layers the flow does not implement)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{what} not found: {path}")
    if not zipfile.is_zipfile(path):     # (Keras would say "File not found" of a file that is there)
        raise ModelFileError(f"model file {path} is corrupt or not a Keras model (not a zip archive; a .keras file "
                             f"is one, as model.save('m.keras') writes it)")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types (zipfile, h5py, ValueError) for a damaged file
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"model file {path} is corrupt or not a Keras model ({reason})") from None
    if supported:
        check_supported(model, str(path))
    check_finite(model, str(path))
    return model


def strip_training_state(model: keras.Model) -> keras.Model:
    """An uncompiled copy of ``model``: the same weights, no optimizer state to save."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def save_model(model: keras.Model, path: Path | str) -> Path:
    """Save atomically as ``.keras`` (without optimizer state) after checking the weights are finite."""
    from prunehw.core.artifacts import atomic_path

    check_finite(model, str(path))
    with atomic_path(path) as tmp:
        strip_training_state(model).save(tmp)
    return Path(path)


def prunable_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers with a weight matrix: Conv2D and Dense, in order."""
    return [l for l in model.layers if isinstance(l, (keras.layers.Conv2D, keras.layers.Dense))]


def weight_counts(model: keras.Model) -> tuple[int, int]:
    """(total, nonzero) over all kernels, biases excluded."""
    total = kept = 0
    for layer in prunable_layers(model):
        k = layer.kernel.numpy()
        total += k.size
        kept += int(np.count_nonzero(k))
    return total, kept
