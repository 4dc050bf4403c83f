"""What pruning costs on the accelerator, as functions of how many rows and columns each weighted layer keeps:
cycles per image (the exact cycle model) and pJ per inference (the activity model priced by the energy model).

Pruning to a hardware target (``target_cycles``, ``target_energy_uj``, ``target_images_per_s``) searches over
kept counts; these are its cost functions. Both start from the *unpruned* network's program and recount its ops
for the kept (rows, columns) of each weighted layer: each layer's row and column tiles and the pooling passes'
channel tiles, which is what pruning changes (:func:`recount`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Iterable

from prunehw.hw.compile.program import MatmulOp, Program
from prunehw.hw.models.cycle_model import activity_model, divides, op_cycles
from prunehw.hw.models.energy import energy

__all__ = ["cycle_cost", "energy_cost", "recount"]

Counts = Iterable[tuple[int, int]]


def _cut(op: MatmulOp, rows: int, cols: int, R: int, C: int, gather: bool) -> dict:
    """The fields of ``op`` cut to its first ``rows`` rows and ``cols`` columns: its tiles (the rest zeroed), biases,
    row table (rows beyond the kept ones invalid) and per-fold MACs."""
    n_rt, n_ct = max(1, math.ceil(rows / R)), max(1, math.ceil(cols / C))
    tiles = []
    for ct in range(n_ct):
        for rt in range(n_rt):
            t = op.tiles[ct * op.n_rt + rt].copy()
            t[max(0, rows - rt * R):, :] = 0
            t[:, max(0, cols - ct * C):] = 0
            tiles.append(t)
    # (a convolution whose row tiles were cut below whole taps keeps rows of several taps in one row tile:
    # they read different words, so its input buffer is kept in R copies; the offsets say so)
    table = [[(i if gather else o, lane, v if rt * R + i < rows else 0)
              for i, (o, lane, v) in enumerate(op.row_table[rt])] for rt in range(n_rt)]
    return dict(tiles=tiles, bias=op.bias[:n_ct], row_table=table, row_taps=op.row_taps[:n_rt],
                macs_per_fold=[min(R, rows - rt * R) * min(C, cols - ct * C) for ct in range(n_ct)
                               for rt in range(n_rt)], rows=rows, cols=cols, n_rt=n_rt, n_ct=n_ct)


def recount(program: Program, counts: Counts, tiles: bool = True) -> list:
    """``program``'s ops recounted for (kept rows, kept columns) per weighted layer, in order: each layer's row and
    column tiles and the pooling passes' channel tiles; with ``tiles``, also the weight tiles, biases and row
    tables cut to them (what the activity model reads)."""
    R, C = program.rows, program.cols
    kept, ops, cols = iter(counts), [], None
    for op in program.ops:
        if isinstance(op, MatmulOp):
            fed = op.kernel[0] * op.kernel[1] * cols if op.kind == "conv2d" and cols is not None else None
            rows, cols = next(kept)
            change = _cut(op, rows, cols, R, C, gather=fed is not None and rows < fed) if tiles else \
                dict(n_rt=max(1, math.ceil(rows / R)), n_ct=max(1, math.ceil(cols / C)))
        else:
            change = dict(n_ct=max(1, math.ceil(cols / C)))
        ops.append(dataclasses.replace(op, **change))
    return ops


def cycle_cost(program: Program) -> Callable[[Counts], int]:
    """Cycles per image of ``program``'s network pruned to given (kept rows, kept columns) per weighted layer: the
    exact cycle model of the recounted ops."""
    R, C = program.rows, program.cols
    residual, div = any(op.add for op in program.matmuls()), divides(program)
    return lambda counts: sum(op_cycles(op, R, C, residual, div) for op in recount(program, counts, tiles=False))


def energy_cost(program: Program, desc: dict, table: dict) -> Callable[[Counts], float]:
    """pJ per inference of ``program``'s network (``desc``: its accelerator's description, ``hw.generate.describe``)
    pruned to given (kept rows, kept columns) per layer: the activity model of the ops cut to the kept tiles (the
    weights of the rows and columns beyond the kept counts zeroed, their rows marked invalid; a convolution with
    fewer rows than its kept input channels times its taps gathers its row tiles from several words, as the
    pruned program's does), priced by :func:`~prunehw.hw.models.energy.energy` (``table``) at the memory sizes of
    those tiles. An estimate for the search (the multiplies a zero weight gates depend on which rows and columns
    the pruning keeps); a run reports the energy of the pruned design's own RTL counters."""
    R, C = program.rows, program.cols

    def cost(counts) -> float:
        ops = recount(program, counts)
        mm = [o for o in ops if isinstance(o, MatmulOp)]
        # the memories shrink with the tiles: weight ROM bits, row table and bias words, ping-pong buffer depths
        depth = [max([o.out_pix * o.n_ct for o in ops if o.out_buf == b], default=1) for b in (0, 1)]
        was = desc["memories"]
        mem = {**was, "weights": {"bytes": -(-sum(len(o.tiles) * R * C * o.weight_bits for o in mm) // 8)},
               "row_table": {**was["row_table"], "words": sum(len(o.row_table) for o in mm)},
               "bias": {**was["bias"], "words": sum(o.n_ct for o in mm)},
               "activations": {**was["activations"], "buffers": [*depth, was["activations"]["buffers"][2]]}}
        return energy(activity_model(dataclasses.replace(program, ops=ops)), {**desc, "memories": mem}, table)["total"]

    return cost
