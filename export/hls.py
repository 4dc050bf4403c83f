"""hls4ml export from the numeric contract: generated per-layer config, C-simulation, kept project.

The hls4ml config starts from ``config_from_keras_model(granularity="name")``
and every precision is then set from the contract: weight, bias, accumulator
and result of each conv/dense (result at full accumulator precision), the
result of the ReLU hls4ml splits off (rounding and saturation live there; a
hidden conv/dense with no ReLU after it rounds and saturates in its own
result instead), and pooling/flatten/input types. The Keras weights handed over are the
contract's exact values (``dequantized_model``), and ``predict`` is called with
float64 input, whose interface passes every input value exactly.

Conv strides and ``same`` padding need nothing of ours: hls4ml reads them from
the Keras layer, computes Keras' padding (the smaller half on top/left) and, in
io_parallel, fills each layer's im2col buffer with zeros where a tap falls
outside the map, as the golden model pads. What is checked here is that the
Keras model handed over strides and pads as its contract says.

Each layer's types are its kind's (:meth:`~prunehw.export.kinds.Kind.hls_precision`; average pooling's, which
hls4ml divides in its accumulator, are explained at :class:`~prunehw.export.kinds.AvgPool2D`).
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from prunehw.core.errors import ModelFileError
from prunehw.export.contract import Contract
from prunehw.export.kinds import fmt_type, kind, weighted

__all__ = ["hls_config", "hls4ml_layers", "convert", "predict_ints", "avgpool_types"]


def avgpool_types(layer: dict) -> tuple[str, str]:
    """(accum, result) hls4ml types of a contract ``avgpool2d`` layer (see :class:`~prunehw.export.kinds.AvgPool2D`)."""
    p = kind(layer).hls_precision(layer)
    return p["accum"], p["result"]


def _check_geometry(model, contract: Contract) -> None:
    """Refuse a Keras model whose convolutions stride or pad, or whose poolings pool, otherwise than the contract's
    (hls4ml follows the model, the golden model the contract: they would differ)."""
    by_name = {l.name: l for l in model.layers}
    for layer in contract.layers:
        if layer["name"] in by_name:
            mismatch = kind(layer).keras_mismatch(layer, by_name[layer["name"]])
            if mismatch:
                raise ModelFileError(f"layer {layer['name']!r}: {mismatch}")


def hls4ml_layers(model):
    """``model`` with each relu6 (``ReLU(max_value=6)``, which hls4ml 1.3's Keras 3 converter refuses) as
    ``Activation("relu6")``, the same function, which hls4ml converts to its ``nnet::relu6``: the accumulator clamped
    to [0, 6] in its own type, then cast to the ReLU's result type, rounding and saturating. The contract rounds
    first and caps after; the two agree because 6 is on the result's grid. Other layers are copied unchanged."""
    import keras

    from prunehw.model.activations import relu_kind

    capped = {l.name for l in model.layers if relu_kind(l) == "relu6"}
    if not capped:
        return model
    out = keras.models.clone_model(model, clone_function=lambda l: keras.layers.Activation("relu6", name=l.name)
                                   if l.name in capped else l.__class__.from_config(l.get_config()))
    for src, dst in zip(model.layers, out.layers):
        dst.set_weights(src.get_weights())
    return out


def hls_config(model, contract: Contract, backend: str = "Vivado") -> dict:
    """The hls4ml configuration of ``model`` (its relu6 layers as :func:`hls4ml_layers` hands them over), every
    precision taken from ``contract``."""
    import hls4ml

    model = hls4ml_layers(model)
    _check_geometry(model, contract)
    cfg = hls4ml.utils.config_from_keras_model(model, granularity="name", backend=backend)
    cfg["Model"].update({"Precision": fmt_type({"bits": 32, "frac": 16}), "ReuseFactor": 1, "Strategy": "Latency"})
    names = cfg["LayerName"]
    # the input's names: a Sequential's first layer's input tensor, a functional model's InputLayer
    first = {getattr(getattr(model.layers[0], "input", None), "name", None),
             model.inputs[0]._keras_history.operation.name}
    inp = contract.input
    for name in names:
        if name not in {l["name"] for l in contract.layers} and \
                name not in {l["output"].get("name") for l in contract.layers if "output" in l}:
            if name in first or "input" in name.lower() or name == "image":
                names[name]["Precision"] = {"result": fmt_type(inp)}
    for layer in contract.layers:
        entry = names.setdefault(layer["name"], {})
        entry["Precision"] = kind(layer).hls_precision(layer)
        if "output" in layer and layer["output"].get("name"):     # (an add's fused ReLU too)
            out = layer["output"]
            names.setdefault(out["name"], {})["Precision"] = {"result": fmt_type(out, rounding=True, saturate=True)}
        if not weighted(layer):
            continue
        entry["ReuseFactor"] = 1
        out = layer["output"]
        if not out.get("name") and (out["bits"], out["frac"]) != (layer["accum"]["bits"], layer["accum"]["frac"]):
            # a hidden layer with no ReLU after it requantizes in its own output cast (no layer follows that
            # would round and saturate: the next one would truncate and wrap instead)
            entry["Precision"]["result"] = fmt_type(out, rounding=True, saturate=True)
    return cfg


#: g++ flags of the hls4ml C-simulation library instead of hls4ml's ``-O3`` (same integers either way: every
#: image is checked against the golden model). Measured on this project's 2-core machine: the quick network
#: compiles in 13 s at -O1 instead of 30 s at -O3 and runs 5% slower. For larger networks -O1's points-to
#: analysis, full redundancy elimination and interprocedural side-effect analyses take most of the time
#: (ResNet-8's library: 304 s at -O1, 175 s without those passes, 81 s at -O0 but 33x slower to run); without
#: them it runs 8-12% slower than -O1 (ResNet-8 6.5 images/s instead of 7.4; the default network 109 instead of
#: 118), so ResNet-8 verifies 1,000 images about 2 minutes sooner and the default network about as fast.
HLS_CSIM_FLAGS = "-O1 -fno-tree-pta -fno-tree-fre -fno-ipa-modref -fno-ipa-reference -fno-ipa-pure-const"


def convert(model, contract: Contract, out_dir: Path, backend: str = "Vivado"):
    """Convert and compile (C simulation) into ``out_dir``; returns the compiled hls4ml model."""
    import hls4ml

    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    model = hls4ml_layers(model)
    cfg = hls_config(model, contract, backend)
    hmodel = hls4ml.converters.convert_from_keras_model(
        model, hls_config=cfg, output_dir=str(out_dir), backend=backend, io_type="io_parallel", project_name="prunehw")
    hmodel.write()
    script = out_dir / "build_lib.sh"
    text = script.read_text()
    if 'CFLAGS="-O3 -fPIC"' not in text:
        raise RuntimeError(f"hls4ml's {script.name} no longer sets CFLAGS=\"-O3 -fPIC\": update HLS_CSIM_FLAGS's patch")
    script.write_text(text.replace('CFLAGS="-O3 -fPIC"', f'CFLAGS="{HLS_CSIM_FLAGS} -fPIC"'))
    hmodel._compile()
    return hmodel


def _to_ints(y: np.ndarray, frac: int) -> np.ndarray:
    scaled = np.asarray(y, dtype=np.float64) * 2.0 ** frac
    ints = np.rint(scaled)
    if not np.array_equal(ints, scaled):
        raise ValueError("hls4ml output is not on the contract's fixed-point grid")
    return ints.astype(np.int64)


_WORKER_MODEL = None


def _worker_init(project_dir: str, library: str):
    """Load the parent's compiled C-simulation library; never rebuild it (workers would race on the objects)."""
    global _WORKER_MODEL
    import ctypes

    import hls4ml

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    _WORKER_MODEL = hls4ml.converters.link_existing_project(project_dir)
    _WORKER_MODEL._top_function_lib = ctypes.cdll.LoadLibrary(library)


def _worker_predict(x: np.ndarray) -> np.ndarray:
    return np.asarray(_WORKER_MODEL.predict(x))


def predict_ints(hmodel, project_dir: Path, contract: Contract, x_uint8: np.ndarray, workers: int = 2,
                 chunk: int = 250) -> np.ndarray:
    """Logit integers of hls4ml's C simulation on uint8 images (float64 input, in ``workers`` processes)."""
    frac = contract.weighted()[-1]["output"]["frac"]
    x = x_uint8.astype(np.float64) / 256.0
    chunks = [x[i:i + chunk] for i in range(0, len(x), chunk)]
    outs = []
    if workers <= 1 or len(chunks) == 1:
        for c in tqdm(chunks, desc="hls4ml C-sim", unit="chunk", leave=False):
            outs.append(np.asarray(hmodel.predict(c)).reshape(len(c), -1))
    else:
        import multiprocessing as mp

        library = max(Path(project_dir).glob("firmware/*.so"), key=lambda p: p.stat().st_mtime)
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                                 initargs=(str(project_dir), str(library))) as pool:
            for c, y in zip(chunks, tqdm(pool.map(_worker_predict, chunks), total=len(chunks), desc="hls4ml C-sim",
                                         unit="chunk", leave=False)):
                outs.append(y.reshape(len(c), -1))
    return _to_ints(np.concatenate(outs), frac)
