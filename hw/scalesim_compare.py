"""SCALE-Sim cycle counts for the same matrix products our systolic array runs.

SCALE-Sim (``scalesim`` 3.0) is an analytical/trace-driven model of a
systolic-array accelerator: it maps each GEMM onto an ``rows x cols`` PE array
under a chosen dataflow (weight, output or input stationary), folds it over the
array and replays the operand demand through double-buffered SRAMs.  Its cycle
count is an independent estimate, not a bit-true count of our controller, so it
is compared side by side with the cycles our RTL (and ``cycle_model``) report.

Functions
---------
scalesim_cycles
    Run SCALE-Sim in GEMM mode and return the compute cycles of every layer.
"""

from __future__ import annotations

import contextlib
import csv
import io
from pathlib import Path

__all__ = ["DATAFLOWS", "scalesim_cycles"]

#: Dataflows SCALE-Sim implements (weight, output, input stationary).
DATAFLOWS = ("ws", "os", "is")
_RUN_NAME = "prunehw_compare"
#: Per-buffer SRAM size in kB: big enough that no layer here ever stalls on SRAM capacity.
_SRAM_KB = 1024
#: COMPUTE_REPORT.csv column: cycles from the first compute to the last output,
#: including stalls; "Total Cycles (incl. prefetch)" would also count the DRAM fill.
_CYCLES_COLUMN = "Total Cycles"

# scale_config.read_conf_file() reads every key below (Bandwidth and the sparsity
# details only conditionally; they are given anyway so the file is complete).
# No [network_presets]: that branch reads TopologyCsvLoc from the wrong section.
_CONFIG = """\
[general]
run_name = {run_name}

[run_presets]
InterfaceBandwidth = CALC
UseRamulatorTrace = False

[architecture_presets]
ArrayHeight = {rows}
ArrayWidth = {cols}
IfmapSramSzkB = {sram}
FilterSramSzkB = {sram}
OfmapSramSzkB = {sram}
IfmapOffset = 0
FilterOffset = 10000000
OfmapOffset = 20000000
Bandwidth = 10
Dataflow = {dataflow}
ReadRequestBuffer = 32
WriteRequestBuffer = 32

[layout]
IfmapCustomLayout = False
IfmapSRAMBankBandwidth = 10
IfmapSRAMBankNum = 10
IfmapSRAMBankPort = 2
FilterCustomLayout = False
FilterSRAMBankBandwidth = 10
FilterSRAMBankNum = 10
FilterSRAMBankPort = 2

[sparsity]
SparsitySupport = false
SparseRep = ellpack_block
OptimizedMapping = false
BlockSize = 4
RandomNumberGeneratorSeed = 40
"""


def _check(layers: list[tuple[str, int, int, int]], rows: int, cols: int, dataflow: str) -> None:
    for what, value in (("rows", rows), ("cols", cols)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{what} must be a positive int, got {value!r}")
    if dataflow not in DATAFLOWS:
        raise ValueError(f"unknown dataflow {dataflow!r}; allowed: {', '.join(DATAFLOWS)}")
    if not layers:
        raise ValueError("layers is empty; give at least one (name, M, K, N) tuple")
    seen = set()
    for layer in layers:
        name, *dims = layer
        # The CSV reader splits on commas and the result is keyed by name.
        if not isinstance(name, str) or not name.strip() or "," in name or name in seen:
            raise ValueError(f"layer name {name!r} must be a unique non-empty string without commas")
        seen.add(name)
        if len(dims) != 3 or any(not isinstance(d, int) or isinstance(d, bool) or d <= 0 for d in dims):
            raise ValueError(f"layer {name!r} has dimensions {tuple(dims)!r}; need three positive ints (M, K, N)")


def scalesim_cycles(layers: list[tuple[str, int, int, int]], rows: int, cols: int,
                    work_dir: Path, dataflow: str = "ws") -> dict[str, int]:
    """SCALE-Sim's compute cycles of every ``[M x K] @ [K x N]`` layer on a ``rows x cols`` array.

    Parameters
    ----------
    layers : list of (name, M, K, N)
        M output positions, K reduction rows, N output columns; names must be unique.
    rows, cols : int
        Array height (ArrayHeight) and width (ArrayWidth).
    work_dir : pathlib.Path
        Created if missing; config, topology, layout and SCALE-Sim's reports go here.
    dataflow : {"ws", "os", "is"}
        Weight, output or input stationary.

    Returns
    -------
    dict of str to int
        Layer name to the "Total Cycles" SCALE-Sim reports in COMPUTE_REPORT.csv.

    Raises
    ------
    ValueError
        On non-positive sizes, malformed layers or an unknown dataflow.
    """
    _check(layers, rows, cols, dataflow)
    from scalesim.scale_sim import scalesim  # imported late: optional, heavy dependency

    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    config = work_dir / "scalesim.cfg"
    config.write_text(_CONFIG.format(run_name=_RUN_NAME, rows=rows, cols=cols, sram=_SRAM_KB, dataflow=dataflow))
    # GEMM topology: the reader skips the header and drops the field after the last
    # comma, and its column order is M, N, K (not M, K, N).
    topology = work_dir / "topology.csv"
    topology.write_text("Layer, M, N, K,\n" + "".join(f"{n}, {m}, {nn}, {k},\n" for n, m, k, nn in layers))
    # The layout reader always opens its file; a header alone means "default layout".
    layout = work_dir / "layout.csv"
    layout.write_text("Layer name,\n")
    # A stale report from an earlier run must never be read back as this run's.
    report = work_dir / _RUN_NAME / "COMPUTE_REPORT.csv"
    report.unlink(missing_ok=True)

    with contextlib.redirect_stdout(io.StringIO()):  # SCALE-Sim prints banners and warnings
        sim = scalesim(save_disk_space=True, verbose=False, config=str(config), topology=str(topology),
                       layout=str(layout), input_type_gemm=True)
        sim.run_scale(top_path=str(work_dir))

    with report.open(newline="") as f:
        rows_out = [{k.strip(): v.strip() for k, v in r.items() if k and k.strip()} for r in csv.DictReader(f, skipinitialspace=True)]
    # The report is keyed by LayerID, in topology order.
    by_id = {int(r["LayerID"]): int(float(r[_CYCLES_COLUMN])) for r in rows_out}
    return {name: by_id[i] for i, (name, *_dims) in enumerate(layers)}
