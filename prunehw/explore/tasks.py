"""The work units of a sweep: plain top-level functions, run remotely by Ray or in turn by the serial executor.

Ray pickles them by reference (``prunehw.explore.tasks.<name>``), so they stay
top-level functions of this module; heavy imports stay inside them.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path

#: One thread per task: set in Ray workers (runtime_env) and in the serial process before TensorFlow starts.
SINGLE_THREAD_ENV = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1",
                     "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
                     "TQDM_DISABLE": "1"}


def _data(cfg):
    """The run's data set, loaded once per process (a Ray worker keeps it between tasks)."""
    return _dataset(json.dumps(cfg.data.to_dict(), sort_keys=True))


@functools.lru_cache(maxsize=2)
def _dataset(data_json: str):
    from prunehw.core.config import DataConfig
    from prunehw.model.data import load_dataset

    return load_dataset(DataConfig.from_dict(json.loads(data_json)))


def _run_config(run: dict):
    from prunehw.core.config import RunConfig

    return RunConfig.from_toml_dict(run)


def _single_thread() -> None:
    for k, v in SINGLE_THREAD_ENV.items():
        os.environ.setdefault(k, v)
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # the runtime already started: the environment variables above were read then
        pass


def prune_task(run: dict, dense: bytes, method: str, ratio: float, criterion: str, tile: tuple | None) -> dict:
    """Prune the dense model (``.keras`` bytes); returns the pruned model, its index maps and float accuracy."""
    _single_thread()
    from prunehw.core.config import VariantConfig
    from prunehw.model.network import load_model, save_model
    from prunehw.stages.prune import prune_model

    cfg = _run_config(run)
    if tile is not None:
        cfg = cfg.replace(array=cfg.array.replace(rows=tile[0], cols=tile[1]))
    data = _data(cfg)
    variant = VariantConfig(method=method, ratio=ratio, schedule="iterative", criterion=criterion, tile_aware=tile is not None)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "dense.keras"
        src.write_bytes(dense)
        model, maps, got = prune_model(load_model(src), data, cfg, variant, Path(tmp))
        out = save_model(model, Path(tmp) / "pruned.keras")
        return {"model": out.read_bytes(), "maps": maps.read_bytes() if maps else None,
                "accuracy_float": got["accuracy"], "weights_kept": int(got["weights_kept"]),
                "ratio_measured": got["ratio_measured"]}


def quant_task(run: dict, dense: bytes, pruned: dict, weight_bits: int) -> dict:
    """Quantize a pruned model to the numeric contract at ``weight_bits``; golden accuracy on the test set."""
    _single_thread()
    from prunehw.model.network import load_model
    from prunehw.stages.quantize import write_contract

    cfg = _run_config(run)
    cfg = cfg.replace(quant=cfg.quant.replace(weight_bits=weight_bits))
    data = _data(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "dense.keras").write_bytes(dense)
        (t / "pruned.keras").write_bytes(pruned["model"])
        maps = None
        if pruned["maps"] is not None:
            maps = t / "index_maps.json"
            maps.write_bytes(pruned["maps"])
        cj = t / "contract.json"
        npz, acc = write_contract(load_model(t / "pruned.keras"), data, cfg, maps, t / "dense.keras", None, cj)
        return {"contract": cj.read_bytes(), "weights": npz.read_bytes(), "accuracy_quant": acc,
                "test_images": int(len(data.y_test))}


def _load_contract_bytes(quant: dict, folder: Path):
    from prunehw.export.contract import load_contract

    (folder / "weights.npz").write_bytes(quant["weights"])
    (folder / "contract.json").write_bytes(quant["contract"])
    return load_contract(folder / "contract.json")


def hw_task(quant: dict, rows: int, cols: int, dataflow: str, inject: str | None = None) -> dict:
    """Cycles, activity and energy per image of a quantized network on an ``rows`` x ``cols`` array (analytic)."""
    import numpy as np

    from prunehw.core.config import ArrayConfig
    from prunehw.hw.models.cycle_model import activity_model
    from prunehw.hw.generate import describe, program_for
    from prunehw.hw.models.energy import energy, load_energy_table

    if inject:
        _inject(inject)
    with tempfile.TemporaryDirectory() as tmp:
        contract = _load_contract_bytes(quant, Path(tmp))
    program = program_for(contract, ArrayConfig(rows=rows, cols=cols, dataflow=dataflow))
    desc = describe(program)
    activity = activity_model(program)
    e = energy(activity, desc, load_energy_table())
    nonzero = sum(int(np.count_nonzero(contract.weights[l["name"]])) for l in contract.weighted())
    return {"cycles": activity["total_cycles"], "macs": activity["macs"],
            "pe_utilization": activity["macs"] / (activity["total_cycles"] * rows * cols),
            "weight_rom_bytes": desc["memories"]["weights"]["bytes"], "energy_pj": e["total"],
            "weights_nonzero": nonzero}


def _inject(spec: str) -> None:
    """Test hook (``PRUNEHW_EXPLORE_INJECT``): ``always`` fails every attempt, ``once:<marker>`` only the first."""
    if spec == "always":
        raise RuntimeError("injected failure (PRUNEHW_EXPLORE_INJECT)")
    marker = Path(spec.split(":", 1)[1])
    if not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        raise RuntimeError("injected failure, first attempt only (PRUNEHW_EXPLORE_INJECT)")


def verify_task(quant: dict, rows: int, cols: int, images, simulator: str = "verilator") -> dict:
    """Generate the point's Verilog, run it under cocotb on ``images`` and compare with golden and analytic model."""
    import numpy as np

    from prunehw.core.config import ArrayConfig
    from prunehw.hw.models.cycle_model import expected_counters
    from prunehw.hw.generate import generate_verilog, program_for
    from prunehw.export.golden import golden
    from prunehw.sim.runner import run_rtl

    images = np.asarray(images)
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        contract = _load_contract_bytes(quant, t)
        array = ArrayConfig(rows=rows, cols=cols, dataflow="ws")
        _, _, desc = generate_verilog(contract, array, t / "rtl")
        r = run_rtl(t / "rtl", desc, images, golden(contract, images), simulator, t / "sim")
    want = expected_counters(program_for(contract, array))
    equal = bool(r.counters) and all([int(v) for v in c] == want for c in r.counters)
    first = dict(zip(desc["counters"], r.counters[0])) if r.counters else {}
    return {"rtl_match": r.match, "rtl_total": r.total, "rtl_cycles": first.get("total_cycles"),
            "rtl_equals_analytic": equal, "simulator": simulator}
