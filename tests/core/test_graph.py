"""The network as a graph: structure checks, chains and what breaks them, evaluation of a residual graph, and
the graphs of Keras models (a residual one represented as it is) and of the config's network."""

import numpy as np
import pytest

from prunehw.core.errors import ModelFileError
from prunehw.core.graph import INPUT, Graph, Node


def _residual() -> Graph:
    """input -> a -> b -> add(b, a) -> out: a branch at ``a`` and a merge at ``add``."""
    return Graph((4,), [Node("a", "dense", (INPUT,), (4,)), Node("b", "dense", ("a",), (4,)),
                        Node("add", "add", ("b", "a"), (4,)), Node("out", "dense", ("add",), (2,))])


def test_a_chain_is_a_chain():
    g = Graph.chain((3,), [("a", "dense", (4,), {"units": 4}), ("b", "dense", (2,), {"units": 2})])
    assert g.is_chain and g.chain_break() is None
    assert [n.inputs for n in g] == [(INPUT,), ("a",)] and g.output.name == "b"
    assert g.input_shapes(g.node("b")) == [(4,)] and [n.name for n in g.readers(INPUT)] == ["a"]
    assert g.require_chain("x") is g
    assert g.entries()[1] == {"units": 2, "name": "b", "type": "dense", "inputs": ["a"], "shape": [2]}
    again = Graph.from_entries((3,), g.entries())
    assert [(n.name, n.kind, n.inputs, n.shape, dict(n.attrs)) for n in again] == \
        [(n.name, n.kind, n.inputs, n.shape, dict(n.attrs)) for n in g]


def test_a_residual_graph_is_represented_and_evaluated():
    g = _residual()
    assert [n.name for n in g.readers("a")] == ["b", "add"]
    assert g.chain_break() == "layer 'add' takes 2 inputs (a merge)"
    with pytest.raises(ModelFileError, match=r"^network: layer 'add' takes 2 inputs \(a merge\); the accelerator "
                                             r"carries a chain of layers only, each reading the one before it$"):
        g.require_chain("the accelerator")
    ops = {"a": lambda v: v + 1, "b": lambda v: v * 2, "add": lambda u, v: u + v, "out": lambda v: v[:2] - 1}
    out, every = g.evaluate(np.arange(4), lambda node, args: ops[node.name](*args), keep=True)
    a = np.arange(4) + 1
    np.testing.assert_array_equal(every["add"], a * 2 + a)
    np.testing.assert_array_equal(out, (a * 2 + a)[:2] - 1)
    np.testing.assert_array_equal(g.evaluate(np.arange(4), lambda node, args: ops[node.name](*args)), out)


@pytest.mark.parametrize("nodes, message", [
    ([Node("a", "dense", (INPUT,), (4,)), Node("a", "dense", ("a",), (2,))], "node 1 is named 'a', a name used before"),
    ([Node(INPUT, "dense", (INPUT,), (4,))], "node 0 is named 'input', the network input's name"),
    ([Node("a", "dense", ("b",), (4,)), Node("b", "dense", ("a",), (2,))],
     "layer 'a' reads 'b', which is not the input or a layer before it"),
    ([Node("a", "dense", (), (4,))], "layer 'a' reads nothing"),
    ([Node("a", "dense", (INPUT,), (4,)), Node("b", "dense", (INPUT,), (2,))],
     "layer 'a' is read by no layer and is not the output (the last layer, 'b'); allowed: one output"),
    ([], "has no layers"),
])
def test_bad_structure_is_refused_in_one_line(nodes, message):
    with pytest.raises(ModelFileError) as err:
        Graph((4,), nodes, "net.json")
    assert str(err.value).startswith("net.json: ") and message in str(err.value) and "\n" not in str(err.value)


def test_the_graph_of_a_keras_residual_model_holds_its_add():
    import keras

    from prunehw.model.graph import keras_graph

    L = keras.layers
    x = keras.Input((8, 8, 1), name="image")
    a = L.Conv2D(4, 3, padding="same", name="c1")(x)
    b = L.Conv2D(4, 3, padding="same", name="c2")(L.ReLU(name="r1")(a))
    out = L.Dense(3, name="logits")(L.Flatten(name="flat")(L.Add(name="add")([b, a])))
    g = keras_graph(keras.Model(x, out), "res.keras")
    assert [(n.name, n.kind, n.inputs, n.shape) for n in g] == [
        ("c1", "Conv2D", (INPUT,), (8, 8, 4)),
        ("r1", "ReLU", ("c1",), (8, 8, 4)), ("c2", "Conv2D", ("r1",), (8, 8, 4)),
        ("add", "Add", ("c2", "c1"), (8, 8, 4)), ("flat", "Flatten", ("add",), (256,)), ("logits", "Dense", ("flat",), (3,))]
    assert g.input_shape == (8, 8, 1) and [n.name for n in g.readers("c1")] == ["r1", "add"]


def test_the_config_network_graph_matches_the_keras_model_it_builds():
    from prunehw.core.config import NetworkConfig
    from prunehw.model.graph import keras_graph
    from prunehw.model.network import build_model, network_graph

    cfg = NetworkConfig()
    g = network_graph(cfg, (28, 28, 1))
    k = keras_graph(build_model(cfg, (28, 28, 1), 10, seed=0))
    assert [(n.name, n.inputs, n.shape) for n in g] == [(n.name, n.inputs, n.shape) for n in k]
    assert [n.kind for n in g] == [l.type for l in cfg.layers] and g.node("conv1").attrs == {"filters": 16, "kernel": 3}
