"""The network as a graph: the one intermediate representation every stage reads.

A :class:`Graph` is the network's input shape and its nodes in topological order. Each :class:`Node` names its
``kind`` (a layer kind: the config's and the contract's ``type``, or, for a Keras model not yet imported, the
Keras class), the nodes it reads (``inputs``, by name; :data:`INPUT` is the network's input), the shape of what
it computes, and its kind's attributes. The last node is the output. A chain (each node reading the one before
it) is the common case, but nothing here assumes one: a residual add is a node with two inputs, a branch a node
read by two, and :meth:`Graph.evaluate` runs either. A stage that can only carry a chain says so in one line
(:meth:`Graph.require_chain`) instead of flattening what it was given.

The graph is built from the config's ``[network]`` or from a Keras model (``prunehw.model.graph``) and carried
in the numeric contract (each layer entry's ``inputs`` and ``shape``; ``prunehw.export.contract`` reads and
writes it with :meth:`Graph.from_entries` and :meth:`Node.entry`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from prunehw.core.errors import ModelFileError

__all__ = ["INPUT", "Graph", "Node"]

#: the name by which a node reads the network's input
INPUT = "input"


@dataclass(frozen=True)
class Node:
    """One layer of the network.

    Parameters
    ----------
    name : str
        Unique in its graph, never :data:`INPUT`.
    kind : str
        The layer kind (``conv2d``, ``dense``, ``relu``, ... or a Keras class name before import).
    inputs : tuple of str
        The nodes whose outputs it reads, in the order it reads them (:data:`INPUT`: the network's input).
    shape : tuple of int
        The shape of its output, batch left out: (height, width, channels) or (features,).
    attrs : mapping
        Its kind's attributes (a contract entry's fields, a config layer's keys).
    """

    name: str
    kind: str
    inputs: tuple[str, ...]
    shape: tuple[int, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def entry(self) -> dict:
        """The node as a contract layer entry: its attributes with ``name``, ``type``, ``inputs`` and ``shape``."""
        return {**self.attrs, "name": self.name, "type": self.kind, "inputs": list(self.inputs),
                "shape": list(self.shape)}


class Graph:
    """The input shape and the nodes, in topological order (each node after every node it reads).

    Construction checks the structure and raises ``ModelFileError`` naming the first bad node (``where`` says of
    what): a name used twice, an input that names no earlier node, a node nothing reads that is not the output.
    """

    def __init__(self, input_shape: Iterable[int], nodes: Iterable[Node], where: str = "network"):
        self.input_shape = tuple(int(v) for v in input_shape)
        self.nodes = tuple(nodes)
        self.where = where
        self._by_name: dict[str, Node] = {}
        self._readers: dict[str, list[str]] = {INPUT: []}
        for i, node in enumerate(self.nodes):
            if node.name == INPUT or node.name in self._by_name:
                self._refuse(f"node {i} is named {node.name!r}, " +
                             ("the network input's name" if node.name == INPUT else "a name used before") +
                             "; allowed: a name used once")
            if not node.inputs:
                self._refuse(f"layer {node.name!r} reads nothing; allowed: one or more inputs")
            for src in node.inputs:
                if src not in self._readers:
                    self._refuse(f"layer {node.name!r} reads {src!r}, which is not the input or a layer before it")
                self._readers[src].append(node.name)
            self._by_name[node.name] = node
            self._readers[node.name] = []
        if not self.nodes:
            self._refuse("has no layers")
        unread = [n.name for n in self.nodes[:-1] if not self._readers[n.name]]
        if unread:
            self._refuse(f"layer {unread[0]!r} is read by no layer and is not the output (the last layer, "
                         f"{self.nodes[-1].name!r}); allowed: one output")

    def _refuse(self, message: str):
        raise ModelFileError(f"{self.where}: {message}")

    # -- building ------------------------------------------------------------------------------------------

    @classmethod
    def chain(cls, input_shape: Iterable[int], nodes: Iterable[tuple[str, str, Iterable[int], Mapping]],
              where: str = "network") -> "Graph":
        """A chain of (name, kind, shape, attrs): each node reads the one before it, the first the input."""
        out, prev = [], INPUT
        for name, kind, shape, attrs in nodes:
            out.append(Node(name, kind, (prev,), tuple(shape), dict(attrs)))
            prev = name
        return cls(input_shape, out, where)

    @classmethod
    def from_entries(cls, input_shape: Iterable[int], entries: Iterable[Mapping], where: str = "contract") -> "Graph":
        """The graph of contract layer entries (each with ``name``, ``type``, ``inputs``, ``shape``; the rest are
        its attributes); ``ModelFileError`` naming the entry that lacks one."""
        nodes = []
        for i, e in enumerate(entries):
            missing = [k for k in ("name", "type", "inputs", "shape") if k not in e]
            if missing:
                raise ModelFileError(f"{where}: layer {e.get('name', i)!r} lacks {', '.join(map(repr, missing))}; "
                                     f"every layer names its type, inputs and output shape")
            attrs = {k: v for k, v in e.items() if k not in ("name", "type", "inputs", "shape")}
            nodes.append(Node(e["name"], e["type"], tuple(e["inputs"]), tuple(e["shape"]), attrs))
        return cls(input_shape, nodes, where)

    def entries(self) -> list[dict]:
        """The nodes as contract layer entries, in order (:meth:`Node.entry`)."""
        return [n.entry() for n in self.nodes]

    # -- reading -------------------------------------------------------------------------------------------

    @property
    def output(self) -> Node:
        return self.nodes[-1]

    def node(self, name: str) -> Node:
        return self._by_name[name]

    def __iter__(self):
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def readers(self, name: str) -> list[Node]:
        """The nodes that read ``name``'s output (:data:`INPUT` for the network's input), in order."""
        return [self._by_name[r] for r in self._readers[name]]

    def input_shapes(self, node: Node) -> list[tuple[int, ...]]:
        """The shapes of what ``node`` reads, in its inputs' order."""
        return [self.input_shape if s == INPUT else self._by_name[s].shape for s in node.inputs]

    def chain_break(self) -> str | None:
        """Why the graph is not a chain (a phrase naming the first node that merges), or None. (With one output and
        every other node read, a graph without merges is a chain: a branch must merge again to reach the output.)"""
        merge = next((n for n in self.nodes if len(n.inputs) != 1), None)
        return f"layer {merge.name!r} takes {len(merge.inputs)} inputs (a merge)" if merge else None

    @property
    def is_chain(self) -> bool:
        return self.chain_break() is None

    def require_chain(self, what: str) -> "Graph":
        """The graph itself if it is a chain; otherwise ``ModelFileError``: ``what`` (the stage or part that needs
        one) carries only chains, and which node breaks it."""
        reason = self.chain_break()
        if reason:
            self._refuse(f"{reason}; {what} carries a chain of layers only, each reading the one before it")
        return self

    # -- running -------------------------------------------------------------------------------------------

    def evaluate(self, x, step: Callable[[Node, list], Any], keep: bool = False):
        """Run the graph on ``x``: ``step(node, [its inputs' values])`` gives each node's value, in order. Returns
        the output's value, or with ``keep`` (value, {name: value of every node}); without it a value is dropped
        once its last reader has run."""
        values: dict[str, Any] = {INPUT: x}
        left = {name: len(r) for name, r in self._readers.items()}
        out = {}
        for node in self.nodes:
            args = [values[s] for s in node.inputs]
            for s in node.inputs:
                left[s] -= 1
                if left[s] == 0 and not keep:
                    del values[s]
            values[node.name] = step(node, args)
            if keep:
                out[node.name] = values[node.name]
        result = values[self.output.name]
        return (result, out) if keep else result

    def inputs_of(self, name: str, x, step: Callable[[Node, list], Any]) -> list:
        """The values of node ``name``'s inputs on ``x`` (in order): the nodes before it run as :meth:`evaluate`
        runs them, the rest do not."""
        values: dict[str, Any] = {INPUT: x}
        for node in self.nodes:
            if node.name == name:
                return [values[s] for s in node.inputs]
            values[node.name] = step(node, [values[s] for s in node.inputs])
        raise KeyError(f"no node {name!r}")
