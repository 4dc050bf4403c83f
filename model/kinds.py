"""The layer kinds of the model side, one handler each: the model package's one home per kind.

A handler knows, for its kind (the config's ``type``, and the Keras class the flow's models hold for it): how to
build its Keras layer from a config entry and the shape it receives (:meth:`Kind.build`, for
``network.build_model``), the config entry of a Keras layer (:meth:`Kind.spec`, for the matrix form's smaller
model), what of a Keras layer it cannot carry (:meth:`Kind.refusal`), and its step of the sparse inference path
(:meth:`Kind.sparse_op`). The modules that walk a whole model look a layer's handler up (:func:`of_layer`,
:func:`of_type`) instead of testing its class.

A new kind is one class here with ``@register`` (and its contract side in ``export/kinds.py``).
"""

from __future__ import annotations

import numpy as np

from prunehw.core.config import LayerSpec
from prunehw.core.errors import ConfigError
from prunehw.core.geometry import conv_geometry, kernel_size
from prunehw.model.activations import RELU_CAPS, relu_cap, relu_kind, relu_layer, relu_refusal

__all__ = ["KINDS", "Kind", "of_layer", "of_type", "register", "unsupported", "unsupported_conv", "unsupported_pool",
           "weighted_layers"]


class Kind:
    """One kind. ``types``: its config types; ``keras``: the Keras class name; ``weighted``: it has a weight
    matrix; ``stem``: the name its unnamed config layers get, numbered; ``label``: what a refusal calls it."""

    types: tuple[str, ...] = ()
    keras: str = ""
    weighted: bool = False
    stem: str = ""
    #: a weighted kind whose columns are its input's channels (depthwise): matrix pruning couples them
    follows_source: bool = False
    #: it reads several inputs (a list), not one
    merge: bool = False

    @property
    def label(self) -> str:
        """What a refusal calls a layer of this kind."""
        return self.keras

    def build(self, spec: LayerSpec, name: str, shape: tuple):
        """(the Keras layer of the config entry ``spec``, the shape it gives) on input ``shape``; ``ConfigError``
        naming the layer if it does not fit that shape."""
        raise NotImplementedError

    def spec(self, layer, kept: int | None = None) -> LayerSpec:
        """The config entry of the Keras ``layer`` (with ``kept`` filters or units, where pruning kept fewer)."""
        return LayerSpec(type=self.types[0], name=layer.name)

    def refusal(self, layer) -> str | None:
        """What of the Keras ``layer`` the flow cannot carry (a phrase to follow its name), or None."""
        return None

    def flat_positions(self, layer, shape: tuple, positions: int) -> int:
        """The pruning couplings through this layer: how many rows of a later Dense's matrix each channel of its
        source layer spans (one per flattened pixel), given ``positions`` before it and its input ``shape``. A
        channel-wise layer (ReLU, pooling) keeps it, a weighted layer starts anew (1)."""
        return 1 if self.weighted else positions

    def row_positions(self, layer, positions: int) -> int:
        """A weighted layer's rows per input channel: its kernel's taps, or the flattened positions it reads."""
        raise NotImplementedError

    def matrix(self, kernel):
        """A weighted layer's matrix of its Keras kernel (rows x columns; the contract's)."""
        return kernel.reshape(-1, kernel.shape[-1])

    def sparse_op(self, layer):
        """This layer's step of the sparse inference path (``model/inference.py``): a function of the activations."""
        return layer


#: the kinds by config type
KINDS: dict[str, Kind] = {}


def register(cls: type[Kind]) -> type[Kind]:
    handler = cls()
    for t in cls.types:
        KINDS[t] = handler
    return cls


def of_type(t: str) -> Kind:
    """The handler of a config type."""
    return KINDS[t]


def of_layer(layer) -> Kind | None:
    """The handler of a Keras layer of a supported class, or None."""
    name = type(layer).__name__
    return next((k for k in KINDS.values() if k.keras == name), None)


def weighted_layers(model) -> list:
    """The layers with a weight matrix (Conv2D and Dense), in order."""
    return [l for l in model.layers if (k := of_layer(l)) and k.weighted]


def unsupported(layer) -> str | None:
    """What of a Keras layer of a supported class the flow cannot carry (a phrase to follow its name), or None."""
    k = of_layer(layer)
    return k.refusal(layer) if k else None


def _sparse_matrix(layer):
    import tensorflow as tf

    k = layer.kernel.numpy()
    # (cols, rows): products are W^T @ x^T
    return tf.sparse.from_dense(tf.constant(k.reshape(-1, k.shape[-1]).T)), tf.constant(layer.bias.numpy())


@register
class Conv2D(Kind):
    types, keras, weighted, stem, label = ("conv2d",), "Conv2D", True, "conv", "conv layer"

    def build(self, spec, name, shape):
        import keras

        kernel, (oh, ow) = self.window(spec, name, shape)
        return (keras.layers.Conv2D(spec.filters, kernel, strides=spec.stride, padding=spec.padding, name=name),
                (oh, ow, spec.filters))

    def window(self, spec, name, shape) -> tuple[tuple[int, int], tuple[int, int]]:
        """((kh, kw), (output height, width)) of the convolution ``spec`` on an input of ``shape``; ``ConfigError``
        naming the layer if it does not fit."""
        if len(shape) != 3:
            raise ConfigError(f"network layer {name!r} ({spec.type}) needs an H x W x C input, got shape {shape}")
        kh, kw = kernel_size(spec.kernel)
        if spec.padding == "valid" and (kh > shape[0] or kw > shape[1]):
            raise ConfigError(f"network layer {name!r}: kernel {kh}x{kw} is larger than its {shape[0]}x{shape[1]} input "
                              f"(valid padding); use a smaller kernel or padding = \"same\"")
        oh, ow, _, _ = conv_geometry(shape[0], shape[1], spec.kernel, spec.stride, spec.padding)
        return (kh, kw), (oh, ow)

    def spec(self, layer, kept=None):
        return LayerSpec(type="conv2d", name=layer.name, filters=layer.filters if kept is None else kept,
                         kernel=list(layer.kernel_size), stride=list(layer.strides), padding=layer.padding)

    def refusal(self, layer):
        return unsupported_conv(layer)

    def row_positions(self, layer, positions):
        return int(layer.kernel.shape[0] * layer.kernel.shape[1])

    def sparse_op(self, layer):
        import tensorflow as tf

        sp, b = _sparse_matrix(layer)
        (kh, kw), (sh, sw), padding = layer.kernel.shape[:2], layer.strides, layer.padding.upper()

        def op(x):       # (TF pads SAME as Keras' Conv2D does; its patches are ordered (ky, kx, c), as the matrix)
            p = tf.image.extract_patches(x, [1, kh, kw, 1], [1, sh, sw, 1], [1, 1, 1, 1], padding)
            n, h, w, d = tf.unstack(tf.shape(p))
            y = tf.sparse.sparse_dense_matmul(sp, tf.reshape(p, (-1, d)), adjoint_b=True)
            return tf.reshape(tf.transpose(y), (n, h, w, -1)) + b

        return op


@register
class DepthwiseConv2D(Conv2D):
    """A depthwise convolution, depth multiplier 1: channel c convolved with its own kh x kw kernel. Its matrix is
    (kh*kw) x C, the contract's: rows its taps, column c channel c's (``export/kinds.py``). Its channels are its
    input's, so matrix pruning removes them with the filters of the layer before it (``model/matrix_form.py``)."""

    types, keras, stem, label = ("depthwise2d",), "DepthwiseConv2D", "dwconv", "depthwise conv layer"
    #: its columns are its input channels: pruned with its source's, never on their own
    follows_source = True

    def build(self, spec, name, shape):
        import keras

        kernel, (oh, ow) = self.window(spec, name, shape)
        return (keras.layers.DepthwiseConv2D(kernel, strides=spec.stride, padding=spec.padding, name=name),
                (oh, ow, shape[2]))

    def spec(self, layer, kept=None):
        return LayerSpec(type="depthwise2d", name=layer.name, kernel=list(layer.kernel_size), stride=list(layer.strides),
                         padding=layer.padding)

    def refusal(self, layer):
        if layer.depth_multiplier != 1:
            return (f"uses depth_multiplier={layer.depth_multiplier}; supported: depth_multiplier 1 (a multiplier m is "
                    f"a depthwise convolution followed by m times the channels)")
        return unsupported_conv(layer)

    def matrix(self, kernel):
        """The (taps x C) matrix of a (kh, kw, C, 1) kernel."""
        return kernel.reshape(-1, kernel.shape[2])

    def row_positions(self, layer, positions):
        return int(layer.kernel.shape[0] * layer.kernel.shape[1])

    def sparse_op(self, layer):
        import tensorflow as tf

        k, b, s, padding = tf.constant(layer.kernel.numpy()), tf.constant(layer.bias.numpy()), layer.strides, layer.padding
        return lambda x: tf.nn.depthwise_conv2d(x, k, (1, *s, 1), padding.upper()) + b


@register
class Add(Kind):
    """The element-wise sum of two inputs (a residual connection). Not a config type: the config's network is a
    chain; a user's model brings it (``model/user_model.py``). Built with ``spec`` None; applied to a list."""

    types, keras, stem, label = ("add",), "Add", "add", "Add"
    merge = True

    def build(self, spec, name, shape):
        import keras

        return keras.layers.Add(name=name), shape

    def spec(self, layer, kept=None):
        raise ConfigError(f"layer {layer.name!r} (Add) has no config entry: the config's network is a chain")


@register
class Dense(Kind):
    types, keras, weighted, stem = ("dense",), "Dense", True, "dense"

    def build(self, spec, name, shape):
        import keras

        if len(shape) != 1:
            raise ConfigError(f"network layer {name!r} (dense) needs a flat input, got shape {shape}; add a flatten layer before it")
        return keras.layers.Dense(spec.units, name=name), (spec.units,)

    def spec(self, layer, kept=None):
        return LayerSpec(type="dense", name=layer.name, units=layer.units if kept is None else kept)

    def row_positions(self, layer, positions):
        return positions

    def sparse_op(self, layer):
        import tensorflow as tf

        sp, b = _sparse_matrix(layer)
        return lambda x: tf.transpose(tf.sparse.sparse_dense_matmul(sp, x, adjoint_b=True)) + b


@register
class ReLU(Kind):
    """``relu`` and ``relu6`` (:mod:`prunehw.model.activations`)."""

    types, keras, stem = tuple(RELU_CAPS), "ReLU", ""       # (unnamed: relu1, relu61, ...: the type's name)

    def build(self, spec, name, shape):
        return relu_layer(spec.type, name), shape

    def spec(self, layer, kept=None):
        return LayerSpec(type=relu_kind(layer), name=layer.name)

    def refusal(self, layer):
        return relu_refusal(layer)

    def sparse_op(self, layer):
        import tensorflow as tf

        cap = relu_cap(layer)
        return tf.nn.relu if cap is None else (lambda x: tf.clip_by_value(x, 0.0, cap))


class _Pool(Kind):
    tf_op = ""       # the TensorFlow pooling of the sparse path

    def build(self, spec, name, shape):
        import keras

        ph, pw = kernel_size(spec.pool or 1)
        if len(shape) != 3 or ph > shape[0] or pw > shape[1]:
            raise ConfigError(f"network layer {name!r}: pool {ph}x{pw} does not fit input shape {shape}")
        return getattr(keras.layers, self.keras)((ph, pw), name=name), (shape[0] // ph, shape[1] // pw, shape[2])

    def spec(self, layer, kept=None):
        return LayerSpec(type=self.types[0], name=layer.name, pool=list(layer.pool_size))

    def refusal(self, layer):
        return unsupported_pool(layer)

    def sparse_op(self, layer):
        import tensorflow as tf

        p, pool = list(layer.pool_size), getattr(tf.nn, self.tf_op)
        return lambda x: pool(x, p, p, "VALID")


@register
class MaxPool2D(_Pool):
    types, keras, stem, tf_op = ("maxpool2d",), "MaxPooling2D", "pool", "max_pool2d"


@register
class AvgPool2D(_Pool):
    types, keras, stem, tf_op = ("avgpool2d",), "AveragePooling2D", "avgpool", "avg_pool2d"


@register
class Flatten(Kind):
    types, keras, stem = ("flatten",), "Flatten", "flatten"

    def build(self, spec, name, shape):
        import keras

        return keras.layers.Flatten(name=name), (int(np.prod(shape)),)

    def flat_positions(self, layer, shape, positions):
        return int(np.prod(shape[:-1])) if len(shape) == 3 else 1

    def sparse_op(self, layer):
        import tensorflow as tf

        return lambda x: tf.reshape(x, (tf.shape(x)[0], -1))


def unsupported_conv(layer) -> str | None:
    """What of a Keras Conv2D the flow cannot carry (a phrase to follow its name), or None if it can.

    Supported: any kernel (kh x kw), any strides (sh, sw), ``valid`` or ``same`` padding, no dilation, one group,
    channels last.
    """
    d = tuple(layer.dilation_rate)
    supported = "supported: padding valid or same, dilation 1"
    if layer.padding not in ("valid", "same"):
        return f"uses padding {layer.padding!r}; {supported}"
    if d != (1, 1):
        return f"uses dilation_rate {d}; {supported}"
    if getattr(layer, "groups", 1) != 1:
        return f"uses groups={layer.groups}; {supported}, groups 1"
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return f"uses data_format {layer.data_format!r}; {supported}, channels_last"
    return None


def unsupported_pool(layer) -> str | None:
    """What of a Keras MaxPooling2D/AveragePooling2D the flow cannot carry (a phrase to follow its name), or None.

    Supported: any window (ph x pw), strides equal to the window (Keras' default), ``valid`` padding, channels
    last.
    """
    p, s = tuple(layer.pool_size), tuple(layer.strides)
    supported = "supported: strides equal to the window, padding valid"
    if s != p:
        return f"is {p} with strides {s}; {supported}"
    if layer.padding != "valid":
        return f"uses padding {layer.padding!r}; {supported}"
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return f"uses data_format {layer.data_format!r}; {supported}, channels_last"
    return None
