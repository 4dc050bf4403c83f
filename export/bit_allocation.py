"""Per-layer weight widths under an accuracy budget: the smallest packed weight store whose golden integer model
stays within ``max_loss`` points of a reference accuracy.

The cost is what the accelerator stores: each layer's weight tiles (its kept rows over the array's rows times
its columns over the array's columns, zero-padded to whole R x C tiles) times the layer's width. The
accuracy is the contract's own integer arithmetic (:func:`export.golden.golden`) on held-out images, so a
candidate is judged by what the hardware will compute, bit for bit, and each judgement takes seconds.

The search is greedy, from 8 bits everywhere down: at each step every layer one bit narrower is tried, and
of the candidates within the budget the one that saves the most stored bits is taken (ties: the more
accurate); it stops when no layer can lose a bit. Layers holding most of the tiles therefore go first, which
is where the storage is. A budget even the 8-bit model misses leaves every layer at 8 bits, and says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from prunehw.export.contract import Contract
from prunehw.export.golden import golden_accuracy
from prunehw.export.kinds import weighted
from prunehw.export.quantize import quantize

__all__ = ["Allocation", "allocate_weight_bits", "packed_weight_bits"]


@dataclass
class Allocation:
    """The chosen widths (layer name -> bits), their packed size and accuracy, and every candidate tried."""

    bits: dict[str, int]
    packed_bits: int
    accuracy: float
    reference: float
    max_loss: float
    met: bool
    trials: list[dict] = field(default_factory=list)


def packed_weight_bits(spec: dict, weights: dict, bits: dict[str, int], rows: int, cols: int) -> int:
    """Bits of the weight tiles an R x C accelerator stores for the contract ``spec``/``weights`` at ``bits``."""
    total = 0
    for layer in spec["layers"]:
        if not weighted(layer):
            continue
        k_rows, n = weights[layer["name"]].shape
        kept = len(layer.get("rows_kept", range(k_rows)))
        total += math.ceil(max(kept, 1) / rows) * math.ceil(n / cols) * rows * cols * bits[layer["name"]]
    return total


def allocate_weight_bits(model, calib_x: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, *, act_bits: int,
                         reference: float, max_loss: float, rows: int, cols: int,
                         rows_kept: dict[str, list[int]] | None = None, lowest: int = 2, progress=None) -> Allocation:
    """Choose each weighted layer's width (``lowest``..8) for ``model`` as the module says.

    ``reference``: the accuracy (0..1) the loss is counted from (the dense float model's on the same images);
    ``max_loss``: points (percent) the integer model may lose; ``progress``: called with each trial's row.
    """
    names = [l.name for l in model.layers if l.__class__.__name__ in ("Conv2D", "Dense")]
    trials: list[dict] = []

    def judge(bits: dict[str, int]) -> tuple[float, int]:
        spec, w, b = quantize(model, calib_x, bits, act_bits, rows_kept)
        acc = golden_accuracy(Contract(spec, w, b), x_val, y_val)
        size = packed_weight_bits(spec, w, bits, rows, cols)
        loss = round(100 * (reference - acc), 6)      # (rounded: 0.99 - 0.985 is a hair over 0.5 in floats)
        row = {"step": len(trials), **{f"bits_{n}": bits[n] for n in names}, "packed_bits": size, "accuracy": acc,
               "loss_points": loss, "within": loss <= max_loss}
        trials.append(row)
        if progress:
            progress(row)
        return acc, size

    current = dict.fromkeys(names, 8)
    acc, size = judge(current)
    if not trials[-1]["within"]:
        return Allocation(current, size, acc, reference, max_loss, False, trials)
    while True:
        best = None
        for n in names:
            if current[n] <= lowest:
                continue
            cand = {**current, n: current[n] - 1}
            a, s = judge(cand)
            if trials[-1]["within"] and (best is None or (s, -a) < (best[2], -best[1])):
                best = (cand, a, s)
        if best is None:
            return Allocation(current, size, acc, reference, max_loss, True, trials)
        current, acc, size = best
