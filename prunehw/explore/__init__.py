"""Design-space exploration: sweeps of pruning x bit width x array size on Ray, with Pareto fronts.

A sweep file names the axes and a base run config (data, network, training,
pruning budget). Each point is one (method, ratio, criterion, weight bits,
array, dataflow) combination; its work is split into shared stages, each run
once and passed to the next by reference (a Ray ObjectRef):

    train (the base run's cached dense model)
      -> prune   per (method, ratio, criterion[, array when tile-aware])
        -> quantize + golden accuracy   per pruned model x weight bits
          -> cycles + activity + energy  per point (array, dataflow)

Points are appended to ``points.csv`` as they finish (one flushed line each),
so a killed sweep resumes with the points it has not recorded yet; pruned
models and contracts are cached under ``cache/`` by the driver, so a resumed
sweep does not prune again either. Failed tasks are retried (``retries``) and
a point that still fails is listed in ``failed.csv``; the rest goes on.

Every task runs on one thread (TensorFlow and BLAS), in Ray workers and in
the serial mode alike, so a point's figures do not depend on how the sweep
was scheduled: the benchmark checks that both modes write the same table.

Modules: ``sweep`` (sweep file, grid, stage keys), ``tasks`` (worker functions),
``executors`` (Ray and serial), ``journal`` (points.csv, journal, failed.csv,
cache), ``pareto`` (fronts, plots, pareto.csv), ``driver`` (run_sweep, verify, benchmark).
"""

from __future__ import annotations

from . import sweep as _sweep
from .driver import benchmark, run_sweep
from .pareto import pareto_front
from .sweep import Point, SweepConfig, grid, load_sweep
from .tasks import SINGLE_THREAD_ENV

__all__ = ["SweepConfig", "Point", "load_sweep", "grid", "run_sweep", "pareto_front", "benchmark", "SINGLE_THREAD_ENV"]

# the shared stages' keys, kept importable from here as before the split (the tests count them)
_prune_key, _quant_key = _sweep._prune_key, _sweep._quant_key
