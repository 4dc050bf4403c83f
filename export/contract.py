"""The numeric contract (DESIGN §5): every fixed-point fact of the network, in one versioned JSON.

All scales are powers of two, so each value is an integer times 2**-frac and
maps exactly onto hls4ml's ``ap_fixed``/``ap_ufixed`` types. The contract is
written by ``prunehw export`` (``contract.json``) beside the integer weights
(``weights.npz``: int8 kernels as im2col matrices, int64 biases) and is read
by the golden model, the hls4ml config generator and the hardware generator;
no fixed-point number is written by hand anywhere else.

Version 2 carries the network as a graph (``prunehw.core.graph``): layer entries are its nodes in topological
order, each with ``inputs`` (the entries it reads, by name; ``"input"`` is the image) and ``shape`` (its output's,
batch left out); the last entry is the logits. :attr:`Contract.graph` reads it. A ReLU is not an entry of its own
but its weighted layer's output, so a layer after a ReLU reads that weighted layer.

Layer entries (their kinds' fields):

- ``conv2d`` / ``dense``: ``kernel`` (conv), ``stride`` (``s``, or ``[sh, sw]`` where they differ) and ``padding``
  (conv; 1 and ``"valid"`` when absent; ``"same"`` pads zeros as Keras does, see
  :func:`conv_geometry`), ``in_channels``/``out_channels``
  (dense: inputs/units), ``weight`` {bits, frac, rounding}, ``bias`` {bits, frac, rounding}
  (``rounding``: how the float values were rounded to integers, ``half_even``),
  ``accum`` {bits, frac}, ``output`` {bits, frac, signed, relu, name} where
  ``name`` is the ReLU layer fused into the output (hls4ml's separate layer)
  or null, and ``relu_max`` (present only for a capped ReLU, ``relu6``: 6,
  a value on the output's grid). The last weighted layer has ``output ==
  accum`` (wide logits). Requantization: ``relu`` (if set), then round half
  up (add half an LSB, floor) to ``output.frac`` and saturate to the range
  :func:`output_range` gives (``output.bits``, and the cap where there is one;
  rounding before the cap gives what capping first would, the cap being on
  the grid).
- ``maxpool2d``, ``avgpool2d``: ``pool``, the window (``p`` or ``[ph, pw]``), its strides
  the window's; an average is the window's sum over its n values, the quotient
  truncated toward zero at ceil(log2 n) more fractional bits, then rounded half up in
  the input's format (a power-of-two window: the sum shifted, rounded half up);
  ``flatten``: nothing (HWC order, as Keras).
- ``add``: the element-wise sum of its two ``inputs`` (a residual connection), ``input``
  the list of their formats, ``output`` as a hidden weighted layer's (``relu`` and
  ``name`` where a ReLU after it is fused into it). Both inputs are shifted left to the
  finer of their two fractional widths (exact), summed exactly, then requantized as an
  accumulator is: ReLU (if set), round half up to ``output.frac``, saturate.

Each kind's check, golden arithmetic and hls4ml types are its handler's, in :mod:`prunehw.export.kinds`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prunehw.core.errors import ModelFileError
from prunehw.core.geometry import conv_geometry
from prunehw.core.graph import INPUT, Graph

__all__ = ["CONTRACT_VERSION", "Contract", "chain_layers", "conv_geometry", "fixed_type", "load_contract", "output_range",
           "save_contract"]

CONTRACT_VERSION = 2
PADDINGS = ("valid", "same")


def fixed_type(bits: int, frac: int, signed: bool = True, rounding: bool = False, saturate: bool = False) -> str:
    """The hls4ml/Vivado HLS type string of a ``bits``-wide value with ``frac`` fractional bits."""
    base = f"ap_{'' if signed else 'u'}fixed<{bits},{bits - frac}"
    if rounding or saturate:
        base += f",{'AP_RND' if rounding else 'AP_TRN'},{'AP_SAT' if saturate else 'AP_WRAP'}"
    return base + ">"


def output_range(out: dict) -> tuple[int, int]:
    """(lo, hi): the integers a requantized output ``out`` {bits, frac, signed, relu_max} may take: its width's
    range, capped at ``relu_max`` (on the grid 2**-frac) where a capped ReLU (relu6) comes before it."""
    bits = out["bits"]
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if out["signed"] else (0, (1 << bits) - 1)
    if out.get("relu_max") is not None:
        hi = min(hi, int(out["relu_max"] * 2 ** out["frac"]))
    return lo, hi


@dataclass(frozen=True)
class Contract:
    """A parsed contract plus its integer weights: ``weights[name]`` (int64 matrix rows x cols), ``biases[name]``."""

    spec: dict
    weights: dict[str, np.ndarray]
    biases: dict[str, np.ndarray]

    @property
    def layers(self) -> list[dict]:
        return self.spec["layers"]

    @property
    def input(self) -> dict:
        return self.spec["input"]

    @property
    def graph(self) -> Graph:
        """The network's graph: a node per layer entry (its attributes the entry's other fields)."""
        return Graph.from_entries(self.input["shape"], self.layers)

    def weighted(self) -> list[dict]:
        """The entries with a weight matrix (conv2d, dense), in order."""
        from prunehw.export.kinds import weighted

        return [l for l in self.layers if weighted(l)]

    def to_json(self) -> str:
        return json.dumps(self.spec, indent=2, sort_keys=True) + "\n"


def _check(spec: dict, where: str) -> None:
    def bad(msg: str):
        raise ModelFileError(f"contract {where}: {msg}")

    if not isinstance(spec, dict) or spec.get("version") != CONTRACT_VERSION:
        version = spec.get("version") if isinstance(spec, dict) else None
        older = " (written by an older prunehw: run prunehw export again)" if isinstance(version, int) and \
            version < CONTRACT_VERSION else ""
        bad(f"version {version!r} is not supported; allowed: {CONTRACT_VERSION}{older}")
    for key in ("input", "layers"):
        if key not in spec:
            bad(f"lacks key {key!r}")
    from prunehw.export.kinds import KINDS

    for i, layer in enumerate(spec["layers"]):
        t = layer.get("type")
        if t not in KINDS:
            bad(f"layer {i} has type {t!r}; allowed: {', '.join(KINDS)}")
        KINDS[t].check(layer, bad)
    graph = Graph.from_entries(spec["input"]["shape"], spec["layers"], f"contract {where}")
    for node in graph:
        want = tuple(KINDS[node.kind].out_shape(node.attrs, graph.input_shapes(node)))
        if node.shape != want:
            bad(f"layer {node.name!r} declares shape {list(node.shape)}; its kind gives {list(want)} from its inputs")


def chain_layers(input_shape, layers: list[dict]) -> list[dict]:
    """Contract layer entries of a chain, each given the edges of a version-2 contract: ``inputs`` (the entry before
    it, the first the input) and its output's ``shape`` (its kind's, :mod:`prunehw.export.kinds`). For contracts
    written by hand (tests, examples); ``quantize`` writes the edges of any graph itself."""
    from prunehw.export.kinds import KINDS

    out, prev, shape = [], INPUT, tuple(input_shape)
    for layer in layers:
        shape = tuple(KINDS[layer["type"]].out_shape(layer, [shape]))
        out.append({**layer, "inputs": [prev], "shape": list(shape)})
        prev = layer["name"]
    return out


def save_contract(path: Path, spec: dict, weights: dict[str, np.ndarray], biases: dict[str, np.ndarray]) -> tuple[Path, Path]:
    """Write ``contract.json`` and ``weights.npz`` (atomically); the contract records the weights' sha256."""
    from prunehw.core.artifacts import atomic_path, write_bytes

    path = Path(path)
    npz = path.with_name("weights.npz")
    by_name = {l["name"]: l for l in spec.get("layers", [])}
    for name, w in weights.items():   # (an int8 cast would wrap silently)
        bits = by_name.get(name, {}).get("weight", {}).get("bits", 8)
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        if bits > 8 or w.size and (int(w.min()) < lo or int(w.max()) > hi):
            raise ModelFileError(f"layer {name!r}: weights span {int(w.min())}..{int(w.max())}, declared {bits}-bit; "
                                 f"allowed: 2..8-bit weights within their declared range")
    with atomic_path(npz) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **{f"w:{k}": v.astype(np.int8) for k, v in weights.items()},
                     **{f"b:{k}": v.astype(np.int64) for k, v in biases.items()})
    spec = {**spec, "version": CONTRACT_VERSION, "weights_file": npz.name,
            "weights_sha256": hashlib.sha256(npz.read_bytes()).hexdigest()}
    _check(spec, str(path))
    write_bytes(path, (json.dumps(spec, indent=2, sort_keys=True) + "\n").encode())
    return path, npz


def load_contract(path: Path | str) -> Contract:
    """Read and check a contract and its weights file (hash, shapes, int8 range)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"contract file not found: {path}")
    try:
        spec = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"contract {path} is not valid JSON ({exc})") from None
    _check(spec, str(path))
    npz = path.with_name(spec.get("weights_file", "weights.npz"))
    if not npz.is_file():
        raise ModelFileError(f"contract {path}: weights file not found: {npz}")
    digest = hashlib.sha256(npz.read_bytes()).hexdigest()
    if digest != spec.get("weights_sha256"):
        raise ModelFileError(f"contract {path}: weights file {npz.name} has sha256 {digest[:16]}..., the contract expects {str(spec.get('weights_sha256'))[:16]}...")
    with np.load(npz) as data:
        weights = {k[2:]: data[k].astype(np.int64) for k in data.files if k.startswith("w:")}
        biases = {k[2:]: data[k].astype(np.int64) for k in data.files if k.startswith("b:")}
    contract = Contract(spec, weights, biases)
    for layer in contract.weighted():
        name = layer["name"]
        if name not in weights or name not in biases:
            raise ModelFileError(f"contract {path}: weights file lacks layer {name!r}")
        if weights[name].shape != (layer["rows"], layer["out_channels"]):
            raise ModelFileError(f"contract {path}: layer {name!r} weights are {weights[name].shape}, expected {(layer['rows'], layer['out_channels'])}")
    return contract
