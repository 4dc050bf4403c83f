"""A user's own Keras model, rewritten into the layers the flow implements, computing the same function.

Small CNNs and MLPs are usually written with conveniences the hardware does not need as layers of their
own. :func:`normalize` rewrites them, layer by layer, into an equivalent model of Conv2D, DepthwiseConv2D and
Dense (linear), Add, ReLU, MaxPooling2D, AveragePooling2D and Flatten:

- an activation fused into Conv2D/DepthwiseConv2D/Dense (``relu``, ``relu6``; ``linear``) becomes a separate ReLU
  layer (or nothing);
- ``ReLU`` (plain or ``max_value=6``) and ``Activation("relu")``/``Activation("relu6")`` layers stay ReLUs (see
  ``model/activations.py``), ``Activation("linear")`` goes;
- a ``softmax`` at the very end (fused or a layer of its own) is dropped: the flow works on logits, and
  softmax does not change their argmax, so accuracy is unchanged (the notes say so);
- ``Dropout`` (and the other inference no-ops: ``GaussianNoise``, ``GaussianDropout``, ``AlphaDropout``,
  ``SpatialDropout2D``) go;
- ``BatchNormalization`` right after a Conv2D, DepthwiseConv2D or Dense that nothing else reads (before or after its
  fused activation's place) is folded into that layer's kernel and bias: ``gamma * (x - mean) / sqrt(var + eps) +
  beta`` (a depthwise kernel scaled channel by channel);
- ``Add`` of two inputs (a residual connection) stays as it is.

Conv2D keeps its kernel (any kh x kw), padding (``valid`` or ``same``) and strides (sh x sw), as does
DepthwiseConv2D (depth multiplier 1). MaxPooling2D and AveragePooling2D stay as they are where their strides equal
their window (Keras' default) and their padding is ``valid``; GlobalAveragePooling2D and GlobalMaxPooling2D become
that pooling over the whole map, then a Flatten. Anything else (another activation, a BatchNormalization with no
layer before it to fold into, dilation, other poolings, other merges, other layer types) is
refused with one line naming the layer and what is supported. Each rewrite is listed in the returned notes, for the
report.

Nothing is trusted. :func:`normalize` reads the model's graph (:func:`~prunehw.model.graph.keras_graph`) from its
output back to its input and refuses, in one line, what no graph of layers holds: several inputs or outputs, a
layer applied more than once (shared weights), a nested model, a bare ``keras.ops`` call. It is taken in data-flow
order, not in ``model.layers`` order: a chain comes back as a Sequential model, a graph with residual adds as a
functional model of the same shape. After rewriting, :func:`verify` runs both models on random inputs and on data
images and refuses a rewrite whose outputs differ beyond float rounding; :func:`import_user_model` does all of it
for a ``.keras`` file, the one way every stage imports a user's model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from prunehw.core.errors import ModelFileError
from prunehw.core.config import LayerSpec
from prunehw.model.activations import activation_kind
from prunehw.model.data import to_float
from prunehw.core.graph import INPUT
from prunehw.model.graph import keras_graph, producer
from prunehw.model.kinds import of_layer, of_type, unsupported
from prunehw.model.network import check_fits, check_supported, load_model

__all__ = ["normalize", "verify", "import_user_model"]

_NO_OPS = ("Dropout", "GaussianNoise", "GaussianDropout", "AlphaDropout", "SpatialDropout1D", "SpatialDropout2D")
_SUPPORTED = ("Conv2D (padding valid/same, any strides)", "DepthwiseConv2D (depth_multiplier 1)", "Dense",
              "Add (of 2)", "ReLU (plain or max_value=6)", "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D",
              "GlobalMaxPooling2D", "Flatten", "Activation (relu, relu6, linear, softmax last)",
              "BatchNormalization (after Conv2D/DepthwiseConv2D/Dense)", "Dropout")
_RANDOM_INPUTS = 16     # random inputs verify runs both models on (besides the data images it is given)
_DATA_IMAGES = 64       # training images import_user_model verifies on: a few batches' worth, a fraction of a second
# float32 tolerance of verify: a folded batch norm and a reordered sum change the last bits of each output; the
# absolute part scales with the outputs' magnitude (1e-4 of the largest, at least 1e-4): wrong rewrites differ by
# a sizeable fraction of it
_RTOL, _ATOL = 1e-4, 1e-4


def _activation_name(layer) -> str:
    act = getattr(layer, "activation", None)
    return getattr(act, "__name__", str(act)) if act is not None else "linear"


def _ends_in_softmax(model: keras.Model) -> bool:
    """Whether the last layer before the output that computes anything is a softmax (fused, or an Activation of
    its own). Walks back from the output only as far as that layer, so it holds for any model, chain or not."""
    op, node = producer(model.outputs[0])
    while not node.is_input:
        kind, act = type(op).__name__, _activation_name(op)
        if not _identity(op):
            return kind in ("Activation", "Conv2D", "Dense") and act == "softmax"
        op, node = producer(node.input_tensors[0])
    return False


def _identity(layer) -> bool:
    """Whether ``layer`` computes nothing at inference (a dropout-like no-op, ``Activation("linear")``)."""
    return type(layer).__name__ in _NO_OPS or (type(layer).__name__ == "Activation" and _activation_name(layer) == "linear")


@dataclass
class _Entry:
    """One layer of the rewritten model: its name and type, its config entry (None for a merge, which the config
    has no type for), its weights (kernel, bias) and the entries it reads."""

    name: str
    type: str
    spec: LayerSpec | None
    weights: list
    inputs: tuple[str, ...]


class _Rewrite:
    """The rewrite of one graph: the plan of (config entry, weights, inputs) of the supported layers it becomes,
    the notes, and what the import handlers ask of the graph.

    ``source[name]`` is the plan entry whose output equals the output of the user's layer ``name`` (a dropped
    identity's is its input's, a folded batch norm's the layer it was folded into); a plan entry's ``inputs`` name
    plan entries (:data:`~prunehw.core.graph.INPUT`: the image). A merge's config entry is None (the config has no
    such type: ``model/kinds.py``'s ``Add``)."""

    def __init__(self, graph, where: str):
        self.graph, self.where = graph, where
        self.nodes = list(graph)
        self.plan: list[_Entry] = []
        self.notes: list[str] = []
        self.source: dict[str, str] = {INPUT: INPUT}
        self.last_weighted = max((i for i, n in enumerate(self.nodes)
                                  if (k := of_layer(n.attrs["layer"])) and k.weighted), default=-1)

    def refuse(self, message: str):
        raise ModelFileError(f"{self.where}: {message}")

    def refuse_unsupported(self, layer) -> None:
        """Refuse a layer of a supported class whose parameters the flow cannot carry (:func:`unsupported`)."""
        refusal = unsupported(layer)
        if refusal:
            self.refuse(f"{of_layer(layer).label} {layer.name!r} {refusal}")

    def inputs(self, node) -> tuple[str, ...]:
        """The plan entries ``node`` reads."""
        return tuple(self.source[s] for s in node.inputs)

    def add(self, node, spec: LayerSpec | None, weights: list, after: str | None = None) -> None:
        """A plan entry for ``spec`` (named as it; a merge as ``node``), reading what ``node`` reads, or (``after``)
        the entry of that name; ``node``'s output is now its."""
        name = spec.name if spec is not None else node.name
        kind = spec.type if spec is not None else of_layer(node.attrs["layer"]).types[0]
        self.plan.append(_Entry(name, kind, spec, weights, self.inputs(node) if after is None else (after,)))
        self.source[node.name] = name

    def entry(self, name: str) -> _Entry | None:
        return next((e for e in self.plan if e.name == name), None)

    def alias(self, node) -> None:
        """``node`` computes nothing: its output is its input's."""
        self.source[node.name] = self.source[node.inputs[0]]

    def softmax_at_end(self, i: int) -> bool:
        """Whether only identities follow node ``i``, so a softmax there can be dropped (a second softmax would be
        dropped too, and softmax(softmax(x)) is not softmax(x))."""
        return all(_identity(n.attrs["layer"]) for n in self.nodes[i + 1:])

    def sole_reader(self, node) -> bool:
        """Whether ``node`` is the only reader of what it reads, back through identities to the layer that
        computes it (so folding into that layer changes nothing else)."""
        name = node.name
        while True:
            src = self.graph.node(name).inputs[0]
            if src == INPUT or len(self.graph.readers(src)) != 1:
                return src != INPUT and len(self.graph.readers(src)) == 1
            if not _identity(self.graph.node(src).attrs["layer"]):
                return True
            name = src

    def drop_softmax(self, name: str) -> None:
        self.notes.append(f"{name}: final softmax dropped (the flow works on logits; argmax, so accuracy, unchanged)")


def _import_weighted(node, i: int, rw: _Rewrite) -> None:
    """Conv2D, DepthwiseConv2D, Dense: the layer itself (a zero bias added where it has none), its fused activation
    split off."""
    layer = node.attrs["layer"]
    name = layer.name
    rw.refuse_unsupported(layer)
    act = _activation_name(layer)
    if act != "linear" and not activation_kind(act) and not (act == "softmax" and i == rw.last_weighted and rw.softmax_at_end(i)):
        rw.refuse(f"layer {name!r} fuses activation {act!r}; supported: relu, relu6, linear, and softmax on the last layer")
    w = layer.get_weights()
    kernel, bias = w[0], (w[1] if len(w) > 1 else np.zeros(w[0].shape[-1] if w[0].ndim != 4 or
                                                            type(layer).__name__ != "DepthwiseConv2D" else
                                                            w[0].shape[2], w[0].dtype))
    if len(w) == 1:
        rw.notes.append(f"{name}: no bias in the model; a zero bias added")
    rw.add(node, of_layer(layer).spec(layer), [kernel, bias])
    if activation_kind(act):
        rw.add(node, LayerSpec(type=act, name=f"{name}_{act}"), [], after=name)
        rw.notes.append(f"{name}: fused {act} split into its own ReLU layer")
    elif act == "softmax":
        rw.drop_softmax(name)


def _import_batchnorm(node, i: int, rw: _Rewrite) -> None:
    """BatchNormalization right after a Conv2D, DepthwiseConv2D or Dense that nothing else reads: folded into its
    kernel and bias."""
    # (after a ReLU it cannot be folded: relu and the affine map do not commute)
    layer = node.attrs["layer"]
    src = rw.entry(rw.source[node.inputs[0]])
    if src is None or not of_type(src.type).weighted or not rw.sole_reader(node):
        rw.refuse(f"BatchNormalization {layer.name!r} does not follow a Conv2D, DepthwiseConv2D or Dense that nothing "
                  f"else reads; supported: BatchNormalization right after one (it is folded into it)")
    gamma, beta, mean, var = (layer.get_weights() if layer.scale and layer.center else _bn_weights(layer))
    if getattr(layer, "axis", -1) not in (-1, len(node.shape)):
        rw.refuse(f"BatchNormalization {layer.name!r} normalizes axis {layer.axis}; supported: the channels (last) axis")
    scale = gamma / np.sqrt(var + layer.epsilon)
    kernel, bias = src.weights
    # (a depthwise kernel (kh, kw, C, 1) scales by channel along its third axis; any other along its last)
    src.weights = [kernel * (scale[:, None] if src.type == "depthwise2d" else scale), (bias - mean) * scale + beta]
    rw.source[node.name] = src.name
    rw.notes.append(f"{layer.name}: batch normalization folded into {src.name!r}")


def _import_activation(node, i: int, rw: _Rewrite) -> None:
    """``Activation``: relu and relu6 as ReLU layers, linear dropped, a softmax at the end dropped."""
    layer = node.attrs["layer"]
    act, name = _activation_name(layer), layer.name
    if activation_kind(act):
        rw.add(node, LayerSpec(type=act, name=name), [])
        rw.notes.append(f"{name}: Activation({act!r}) as a ReLU layer")
    elif act == "linear":
        rw.alias(node)
        rw.notes.append(f"{name}: Activation('linear') dropped (identity)")
    elif act == "softmax" and rw.softmax_at_end(i):
        rw.alias(node)
        rw.drop_softmax(name)
    else:
        rw.refuse(f"Activation {name!r} is {act!r}; supported: relu, relu6, linear, softmax at the end")


def _import_as_is(node, i: int, rw: _Rewrite) -> None:
    """A supported layer (ReLU, the poolings, Flatten) kept as it is, once its parameters are checked."""
    layer = node.attrs["layer"]
    rw.refuse_unsupported(layer)
    rw.add(node, of_layer(layer).spec(layer), [])


def _import_add(node, i: int, rw: _Rewrite) -> None:
    """Add of two inputs (a residual connection), kept as it is."""
    if len(node.inputs) != 2:
        rw.refuse(f"Add {node.name!r} sums {len(node.inputs)} inputs; supported: Add of 2 (chain Adds for more)")
    rw.add(node, None, [])


def _import_global_pool(node, i: int, rw: _Rewrite) -> None:
    """GlobalAveragePooling2D, GlobalMaxPooling2D: the same pooling over a window the size of the whole map, then a
    Flatten (unless ``keepdims``): the same function, in the layers the flow implements."""
    layer = node.attrs["layer"]
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        rw.refuse(f"{type(layer).__name__} {layer.name!r} uses data_format {layer.data_format!r}; supported: channels_last")
    h, w = (int(v) for v in layer.input.shape[1:3])
    kind = "avgpool2d" if type(layer).__name__ == "GlobalAveragePooling2D" else "maxpool2d"
    rw.add(node, LayerSpec(type=kind, name=layer.name, pool=[h, w]), [])
    if not getattr(layer, "keepdims", False):
        rw.add(node, LayerSpec(type="flatten", name=f"{layer.name}_flatten"), [], after=layer.name)
    rw.notes.append(f"{layer.name}: {type(layer).__name__} as a {h}x{w} {kind} over the whole map"
                    + ("" if getattr(layer, "keepdims", False) else ", then a Flatten"))


def _import_no_op(node, i: int, rw: _Rewrite) -> None:
    rw.alias(node)
    rw.notes.append(f"{node.name}: {type(node.attrs['layer']).__name__} dropped (no effect at inference)")


#: how each Keras class is imported (any other is refused)
_IMPORT = {"Conv2D": _import_weighted, "DepthwiseConv2D": _import_weighted, "Dense": _import_weighted,
           "BatchNormalization": _import_batchnorm, "Activation": _import_activation, "ReLU": _import_as_is,
           "MaxPooling2D": _import_as_is, "AveragePooling2D": _import_as_is, "Flatten": _import_as_is,
           "Add": _import_add, "GlobalAveragePooling2D": _import_global_pool,
           "GlobalMaxPooling2D": _import_global_pool, **dict.fromkeys(_NO_OPS, _import_no_op)}


def normalize(model: keras.Model, where: str = "model") -> tuple[keras.Model, list[str]]:
    """(an equivalent model in the supported layers, notes on each rewrite); ``ModelFileError`` if it cannot be.

    The model's layer graph (:func:`~prunehw.model.graph.keras_graph`: one input, one output, each layer called
    once) is read in data-flow order, each layer by its class's import handler (:data:`_IMPORT`). A chain comes
    back as a Sequential model, a graph with merges as a functional one of the same shape.
    """
    graph = keras_graph(model, where, allowed=f"layers only ({', '.join(_SUPPORTED)})")
    rw = _Rewrite(graph, where)
    for i, node in enumerate(rw.nodes):
        handler = _IMPORT.get(node.kind)
        if handler is None:
            rw.refuse(f"layer {node.name!r} has unsupported type {node.kind}; supported: {', '.join(_SUPPORTED)}")
        handler(node, i, rw)
    if not rw.plan or rw.source[graph.output.name] != rw.plan[-1].name:
        rw.refuse(f"the model's output is not its last computing layer's; supported: one output, the logits")
    return _build(model.inputs[0].shape[1:], rw.plan), rw.notes


def verify(model: keras.Model, rewritten: keras.Model, images: np.ndarray | None = None, where: str = "model",
           rng: np.random.Generator | None = None) -> float:
    """The largest absolute difference between ``rewritten``'s outputs and ``model``'s; ``ModelFileError`` unless
    they agree to float32 rounding.

    Parameters
    ----------
    model, rewritten
        The user's model and :func:`normalize`'s rewrite of it. Where ``model`` ends in a softmax (which the
        rewrite drops), ``softmax(rewritten)`` is compared with it.
    images
        Data images, run through both besides the random inputs: float as the network sees them
        (``uint8 / 256``), or uint8 (converted so). A few dozen are plenty.
    where
        What the error names (the model file).
    rng
        Draws the random inputs (uniform in [0, 1), the model's input shape); default seed 0.

    Returns
    -------
    float
        The largest absolute difference seen, over every output of every input (probabilities where the model
        ends in a softmax).
    """
    rng = np.random.default_rng(0) if rng is None else rng
    shape = tuple(model.inputs[0].shape[1:])
    batches = [("random input", rng.random((_RANDOM_INPUTS, *shape), dtype=np.float32))]
    if images is not None and len(images):
        images = to_float(images) if np.issubdtype(images.dtype, np.integer) else np.asarray(images, np.float32)
        if tuple(images.shape[1:]) != shape:
            raise ModelFileError(f"{where}: model input shape {shape} does not match the data's images "
                                 f"{tuple(images.shape[1:])}")
        batches.append(("data image", images))
    softmax = _ends_in_softmax(model)
    largest = 0.0
    for what, x in batches:
        want = np.asarray(keras.ops.convert_to_numpy(model(x, training=False)), np.float64)
        got = rewritten(x, training=False)
        got = np.asarray(keras.ops.convert_to_numpy(keras.ops.softmax(got) if softmax else got), np.float64)
        if got.shape != want.shape:
            raise ModelFileError(f"{where}: the rewritten model's outputs have shape {got.shape[1:]}, yours "
                                 f"{want.shape[1:]}; refusing a rewrite that does not compute the same function")
        got, want = got.reshape(len(x), -1), want.reshape(len(x), -1)    # (output j: flat index, as for logits)
        diff = np.abs(got - want)
        atol = _ATOL * max(1.0, float(np.max(np.abs(want))))
        over = diff - (atol + _RTOL * np.abs(want))
        if not np.all(over <= 0):     # (NaN counts as a difference)
            n, j = np.unravel_index(np.argmax(np.where(np.isnan(over), np.inf, over)), over.shape)
            raise ModelFileError(f"{where}: the rewritten model differs from yours by {diff[n, j]:.3g} at output {j} "
                                 f"on {what} {n} (tolerance {atol:.2g} + {_RTOL:g}*|value|); refusing a rewrite "
                                 f"that does not compute the same function")
        largest = max(largest, float(diff.max()))
    return largest


def import_user_model(path: Path | str, data) -> tuple[keras.Model, list[str], float]:
    """A user's ``.keras`` file, as every stage imports it (``run.model``, ``prunehw prune --model``).

    Loaded (corrupt files and weights that are not finite refused), rewritten into the supported layers
    (:func:`normalize`: a chain, or refused), checked (``check_supported``), checked against the data set
    (``check_fits``: input shape, one logit per class) and verified against the file's own model on random
    inputs and the first training images (:func:`verify`). Each refusal is one ``ModelFileError`` line.

    Parameters
    ----------
    path
        The ``.keras`` file; errors name it.
    data
        The ``Dataset`` the model is to run on.

    Returns
    -------
    (model, notes, largest difference)
        The rewritten model, its rewrites (for the report) and the largest absolute difference :func:`verify` saw
        between its outputs and the file's model's.
    """
    where = str(path)
    raw = load_model(path, supported=False)
    model, notes = normalize(raw, where)
    check_supported(model, where)
    check_fits(model, data, where)
    return model, notes, verify(raw, model, data.x_train[:_DATA_IMAGES], where)


def _bn_weights(layer) -> tuple:
    """gamma, beta, mean, var of a BatchNormalization without scale and/or center (their defaults 1 and 0)."""
    w = list(layer.get_weights())
    n = w[-1].shape[0]
    gamma = w.pop(0) if layer.scale else np.ones(n, w[-1].dtype)
    beta = w.pop(0) if layer.center else np.zeros(n, w[-1].dtype)
    mean, var = w
    return gamma, beta, mean, var


def _build(input_shape, plan: list[_Entry]) -> keras.Model:
    """The model of the plan's entries (each built by its kind, ``model/kinds.py``), holding the plan's weights: a
    Sequential model where each entry reads the one before it, else a functional one."""
    chain = all(e.inputs == ((plan[j - 1].name,) if j else (INPUT,)) for j, e in enumerate(plan))
    x = keras.Input(shape=tuple(input_shape), name="image")
    tensors, layers = {INPUT: x}, []
    for e in plan:
        kind = of_type(e.type)
        shape = tuple(tensors[e.inputs[0]].shape[1:])
        layer, _ = kind.build(e.spec, e.name, shape)
        layers.append(layer)
        if not chain:
            args = [tensors[n] for n in e.inputs]
            tensors[e.name] = layer(args if kind.merge else args[0])
        else:
            tensors[e.name] = keras.KerasTensor((None, *layer.compute_output_shape((1, *shape))[1:]))
    if chain:
        out = keras.Sequential([keras.Input(shape=tuple(input_shape)), *layers], name="user_model")
    else:
        out = keras.Model(x, tensors[plan[-1].name], name="user_model")
    for e, layer in zip(plan, layers):
        if e.weights:
            layer.set_weights([np.asarray(w, dtype=np.float32) for w in e.weights])
    return out
