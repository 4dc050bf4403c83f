"""The network as data: build a Keras model from ``NetworkConfig``, load and check saved models.

Only Conv2D (any kh x kw kernel; valid or same padding; any strides; no dilation), Dense, ReLU (plain, or
capped at 6: see ``model/activations.py``), MaxPooling2D, AveragePooling2D (any window, strides = window) and Flatten are
supported, since those are what the matrix form, the numeric contract and the hardware implement; anything else is
refused with a clear error. Each kind's layer, config entry and refusals are its handler's (``model/kinds.py``).
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
from prunehw.model.kinds import KINDS, of_layer, of_type, unsupported, unsupported_conv, unsupported_pool, weighted_layers

__all__ = ["build_model", "network_graph", "load_model", "save_model", "prunable_layers", "check_finite", "check_fits", "check_supported", "unsupported", "unsupported_conv", "unsupported_pool", "strip_training_state", "weight_counts", "set_seed"]

#: the Keras classes a saved model may hold
_KERAS_TYPES = {*(k.keras for k in KINDS.values()), "InputLayer"}


def set_seed(seed: int) -> None:
    """Fix Python, numpy and TensorFlow randomness and make TF ops deterministic."""
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def _layer_names(cfg: NetworkConfig) -> list[str]:
    counts: dict[str, int] = {}
    names = []
    for spec in cfg.layers:
        counts[spec.type] = counts.get(spec.type, 0) + 1
        names.append(spec.name or f"{of_type(spec.type).stem or spec.type}{counts[spec.type]}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"network.layers: layer name {dup[0]!r} is used twice")
    return names


def build_model(cfg: NetworkConfig, input_shape: tuple[int, int, int], n_classes: int, seed: int) -> keras.Model:
    """Build the float network, checking that every layer fits the shape it receives."""
    graph = network_graph(cfg, input_shape)
    if graph.output.shape != (n_classes,):
        raise ConfigError(f"network: the last dense layer has {graph.output.shape[0]} units but the data set has "
                          f"{n_classes} classes")
    set_seed(seed)
    layers: list[keras.layers.Layer] = [keras.Input(shape=tuple(input_shape), name="image")]
    for spec, node in zip(cfg.layers, graph.require_chain("a Sequential model")):
        layers.append(of_type(spec.type).build(spec, node.name, graph.input_shapes(node)[0])[0])
    return keras.Sequential(layers, name="prunehw_cnn")


def network_graph(cfg: NetworkConfig, input_shape: tuple[int, ...]):
    """The config's network as a graph (``prunehw.core.graph``): a chain of its layers, named as
    :func:`build_model` names them, each with the shape it gives (``ConfigError`` for a layer that does not fit)."""
    from prunehw.model.graph import network_graph as graph_of

    return graph_of(cfg, input_shape, _layer_names(cfg))


def check_supported(model: keras.Model, where: str) -> None:
    for layer in model.layers:
        kind = type(layer).__name__
        if kind not in _KERAS_TYPES:
            raise ModelFileError(
                f"{where}: layer {layer.name!r} has unsupported type {kind}; allowed: Conv2D, Dense, ReLU, MaxPooling2D, "
                f"AveragePooling2D, Flatten"
            )
        kd = of_layer(layer)          # (None only for the InputLayer)
        refusal = kd.refusal(layer) if kd else None
        if refusal:
            raise ModelFileError(f"{where}: {kd.label} {layer.name!r} {refusal}")
        if kd and kd.weighted and layer.activation.__name__ != "linear":
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
    return weighted_layers(model)


def weight_counts(model: keras.Model) -> tuple[int, int]:
    """(total, nonzero) over all kernels, biases excluded."""
    total = kept = 0
    for layer in prunable_layers(model):
        k = layer.kernel.numpy()
        total += k.size
        kept += int(np.count_nonzero(k))
    return total, kept
