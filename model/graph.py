"""The graph (``prunehw.core.graph``) of a Keras model and of the config's ``[network]``.

:func:`keras_graph` reads any Sequential or functional model as it is, before any import: one node per layer
call, its kind the Keras class, its ``attrs["layer"]`` the layer itself; branches, merges and several readers are
represented, not flattened. What no graph of layers can hold is refused in one line naming the layer: several
inputs or outputs, a nested model, a bare ``keras.ops`` call, a layer applied more than once (shared weights).
:func:`network_graph` is the config's network, each node's kind its ``type`` and its attributes its keys.
"""

from __future__ import annotations

import keras

from prunehw.core.errors import ModelFileError
from prunehw.core.graph import INPUT, Graph, Node

__all__ = ["keras_graph", "network_graph", "producer"]


def producer(tensor):
    """(the operation, its call) that made ``tensor``.

    Keras 3 has no public node API: each tensor's ``_keras_history`` names the operation and the call (node, in
    the operation's ``_inbound_nodes``) that made it, as ``keras.src.ops.function.map_graph`` walks them."""
    op, node_index, _ = tensor._keras_history
    return op, op._inbound_nodes[node_index]


def _names(tensors) -> str:
    return ", ".join(t._keras_history.operation.name for t in tensors)


def keras_graph(model: keras.Model, where: str = "model", allowed: str = "layers") -> Graph:
    """The layer graph of ``model`` (kinds: Keras class names), in data-flow order; ``ModelFileError`` (naming
    ``where``; ``allowed`` says what a refused operation could be instead) for what it cannot hold."""
    try:
        inputs, outputs = model.inputs, model.outputs
    except AttributeError:    # (a subclassed keras.Model, or a Sequential never built: no graph to read)
        raise ModelFileError(f"{where}: model {model.name!r} has no layer graph (a subclassed keras.Model, or never "
                             f"built); allowed: a Sequential or functional model with an Input") from None
    if len(inputs) != 1:
        raise ModelFileError(f"{where}: model has {len(inputs)} inputs ({_names(inputs)}); allowed: one input")
    if len(outputs) != 1:
        raise ModelFileError(f"{where}: model has {len(outputs)} outputs ({_names(outputs)}); allowed: one output")
    nodes: list[Node] = []
    named: dict[int, str] = {}          # id(call) -> node name

    def visit(tensor) -> str:
        op, call = producer(tensor)
        if call.is_input:
            return INPUT
        if id(call) in named:
            return named[id(call)]
        if isinstance(op, keras.Model):
            raise ModelFileError(f"{where}: layer {op.name!r} is a nested model ({type(op).__name__}); allowed: its "
                                 f"layers, directly in the model")
        if not isinstance(op, keras.layers.Layer):
            raise ModelFileError(f"{where}: operation {op.name!r} is a keras.ops call ({type(op).__name__}), not a "
                                 f"layer; allowed: {allowed}")
        srcs = tuple(visit(t) for t in call.input_tensors)
        shape = tuple(int(v) for v in op.output.shape[1:])
        nodes.append(Node(op.name, type(op).__name__, srcs, shape, {"layer": op}))
        named[id(call)] = op.name
        return op.name

    visit(outputs[0])
    for node in nodes:
        times = sum(n.attrs["layer"] is node.attrs["layer"] for n in nodes)
        if times > 1:
            raise ModelFileError(f"{where}: layer {node.name!r} is applied {times} times (shared weights); allowed: "
                                 f"each layer once")
    return Graph(tuple(inputs[0].shape[1:]), nodes, where)


def network_graph(cfg, input_shape, names: list[str], where: str = "network") -> Graph:
    """The config's network (a ``NetworkConfig``, its layers named ``names``) as a chain on ``input_shape``, each
    node's shape the one its kind's layer gives (``ConfigError`` naming a layer that does not fit)."""
    from prunehw.model.kinds import of_type

    shape, entries = tuple(input_shape), []
    for spec, name in zip(cfg.layers, names):
        _, shape = of_type(spec.type).build(spec, name, shape)
        attrs = {k: v for k, v in spec.to_dict().items() if k not in ("type", "name") and v is not None}
        entries.append((name, spec.type, shape, attrs))
    return Graph.chain(input_shape, entries, where)
