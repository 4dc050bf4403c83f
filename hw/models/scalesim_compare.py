"""SCALE-Sim cycle counts for the same matrix products our systolic array runs.

SCALE-Sim (``scalesim`` 3.0) models a systolic-array accelerator: it maps each
GEMM onto a ``rows x cols`` PE array under a dataflow (weight, output or input
stationary), folds it over the array and replays the operand demand through
double-buffered SRAMs.  Its cycle count is an independent estimate, not a count
of our controller's schedule, so it is compared side by side with our RTL's.
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import io
from pathlib import Path

import numpy as np

__all__ = ["DATAFLOWS", "scalesim_cycles"]

#: Weight, output and input stationary: the dataflows SCALE-Sim implements.
DATAFLOWS = ("ws", "os", "is")
_RUN = "prunehw_compare"
_SRAM_KB = 1024  # per buffer: large enough that no layer stalls on SRAM capacity
#: COMPUTE_REPORT.csv column: array cycles of the layer, stalls included (zero here);
#: "Total Cycles (incl. prefetch)" would also count the DRAM fill before compute.
_CYCLES_COLUMN = "Total Cycles"


def _config(rows: int, cols: int, dataflow: str) -> dict[str, dict[str, object]]:
    # Every key scale_config.read_conf_file() reads; Bandwidth and the sparsity details
    # are only read conditionally but are given so the file is complete.  No
    # [network_presets]: that branch reads TopologyCsvLoc from the wrong section.
    return {
        "general": {"run_name": _RUN},
        "run_presets": {"InterfaceBandwidth": "CALC", "UseRamulatorTrace": False},
        "architecture_presets": {
            "ArrayHeight": rows, "ArrayWidth": cols, "IfmapSramSzkB": _SRAM_KB, "FilterSramSzkB": _SRAM_KB,
            "OfmapSramSzkB": _SRAM_KB, "IfmapOffset": 0, "FilterOffset": 10_000_000, "OfmapOffset": 20_000_000,
            "Bandwidth": 10, "Dataflow": dataflow, "ReadRequestBuffer": 32, "WriteRequestBuffer": 32},
        "layout": {
            "IfmapCustomLayout": False, "IfmapSRAMBankBandwidth": 10, "IfmapSRAMBankNum": 10, "IfmapSRAMBankPort": 2,
            "FilterCustomLayout": False, "FilterSRAMBankBandwidth": 10, "FilterSRAMBankNum": 10, "FilterSRAMBankPort": 2},
        "sparsity": {"SparsitySupport": False, "SparseRep": "ellpack_block", "OptimizedMapping": False,
                     "BlockSize": 4, "RandomNumberGeneratorSeed": 40},
    }


def _positive(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check(layers, rows, cols, dataflow) -> None:
    for what, value in (("rows", rows), ("cols", cols)):
        if not _positive(value):
            raise ValueError(f"{what} must be a positive int, got {value!r}")
    if dataflow not in DATAFLOWS:
        raise ValueError(f"unknown dataflow {dataflow!r}; allowed: {', '.join(DATAFLOWS)}")
    if not layers:
        raise ValueError("layers is empty; give at least one (name, M, K, N) tuple")
    names = [layer[0] for layer in layers]
    for name, *dims in layers:
        # Names go into a comma-split CSV and key the result, hence no commas, no repeats.
        if not isinstance(name, str) or not name.strip() or "," in name or names.count(name) > 1:
            raise ValueError(f"layer name {name!r} must be a unique non-empty string without commas")
        if len(dims) != 3 or not all(_positive(d) for d in dims):
            raise ValueError(f"layer {name!r} has dimensions {tuple(dims)!r}; need three positive ints (M, K, N)")


def _max(*args):
    # Same value as builtin max() over one-element arrays, but a scalar that int() accepts.
    return np.max(args[0] if len(args) == 1 else np.asarray(args))


@contextlib.contextmanager
def _numpy24_compat():
    # scalesim 3.0.0 does int(max(list of 1-element arrays)), a TypeError since NumPy 2.4
    # (upstream SCALE-Sim issue #160, PR #162).  Shadow max in just those modules, just now.
    mods = [importlib.import_module(f"scalesim.memory.{m}") for m in ("double_buffered_scratchpad_mem", "read_buffer")]
    for mod in mods:
        mod.max = _max
    try:
        yield
    finally:
        for mod in mods:
            del mod.max


def scalesim_cycles(layers: list[tuple[str, int, int, int]], rows: int, cols: int,
                    work_dir: Path, dataflow: str = "ws") -> dict[str, int]:
    """SCALE-Sim's cycles for each ``[M x K] @ [K x N]`` layer on a ``rows x cols`` array.

    Parameters
    ----------
    layers : list of (name, M, K, N)
        M output positions, K reduction rows, N output columns; unique names.
    rows, cols : int
        Array height (ArrayHeight) and width (ArrayWidth).
    work_dir : pathlib.Path
        Created if missing; SCALE-Sim's inputs and reports go here.
    dataflow : {"ws", "os", "is"}
        Weight, output or input stationary.

    Returns
    -------
    dict of str to int
        Layer name to the "Total Cycles" of SCALE-Sim's COMPUTE_REPORT.csv.

    Raises
    ------
    ValueError
        On non-positive sizes, malformed layers or an unknown dataflow.
    """
    _check(layers, rows, cols, dataflow)
    from scalesim.scale_sim import scalesim  # late: only this comparison needs it

    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    config = work_dir / "scalesim.cfg"
    config.write_text("".join(f"[{section}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items()) + "\n"
                              for section, keys in _config(rows, cols, dataflow).items()))
    # GEMM topology: the reader skips the header, drops what follows the last comma,
    # and takes the columns in the order M, N, K.
    topology = work_dir / "topology.csv"
    topology.write_text("Layer, M, N, K,\n" + "".join(f"{name}, {m}, {n}, {k},\n" for name, m, k, n in layers))
    # The layout reader always opens its file; a header alone leaves the default layout.
    layout = work_dir / "layout.csv"
    layout.write_text("Layer name,\n")
    report = work_dir / _RUN / "COMPUTE_REPORT.csv"
    report.unlink(missing_ok=True)  # a stale report must never pass for this run's

    with contextlib.redirect_stdout(io.StringIO()), _numpy24_compat():  # it prints even when not verbose
        sim = scalesim(save_disk_space=True, verbose=False, config=str(config), topology=str(topology),
                       layout=str(layout), input_type_gemm=True)
        sim.run_scale(top_path=str(work_dir))

    with report.open(newline="") as f:
        table = list(csv.DictReader(f, skipinitialspace=True))
    # Rows are keyed by LayerID, which is the layer's position in the topology.
    cycles = {int(r["LayerID"]): int(float(r[_CYCLES_COLUMN])) for r in table}
    return {name: cycles[i] for i, (name, *_dims) in enumerate(layers)}
