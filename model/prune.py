"""Unstructured magnitude pruning (Han et al. 2015): masks, masked fine-tuning, schedules.

Pruned weights stay in the dense tensors as zeros. Masks only ever shrink:
a weight pruned at one step stays pruned (its magnitude is zero, so it is
among the smallest at every later step), and the masks are re-applied after
every optimizer update (a constraint on the kernel variables, run inside the
compiled train step), so fine-tuning cannot revive them.
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np
from tqdm.auto import tqdm

from prunehw.core.errors import ConfigError
from prunehw.model.data import Dataset
from prunehw.model.network import prunable_layers, weight_counts
from prunehw.model.pruning_schedule import PruningSchedule
from prunehw.model.train import fit

__all__ = ["magnitude_masks", "apply_masks", "keep_masks", "prune_unstructured", "measured_ratio"]


def _k_smallest_mask(scores: np.ndarray, n_remove: int) -> np.ndarray:
    """Keep-mask removing exactly ``n_remove`` entries of smallest score (ties by index, stable)."""
    order = np.argsort(scores.ravel(), kind="stable")
    keep = np.ones(scores.size, dtype=bool)
    keep[order[:n_remove]] = False
    return keep.reshape(scores.shape)


def magnitude_masks(kernels: dict[str, np.ndarray], ratio: float, scope: str = "global",
                    layer_ratios: dict[str, float] | None = None, norm: str = "l1") -> dict[str, np.ndarray]:
    """Keep-masks removing ``round(ratio * n)`` weights of smallest magnitude.

    ``scope="global"`` ranks all kernels together; ``"per_layer"`` removes the
    same fraction from each, except layers named in ``layer_ratios``, which get
    their own ratio (a layer not listed keeps ``ratio``). ``norm`` l1 ranks by
    |w|, l2 by w^2 (the same order for single weights; kept for symmetry with
    matrix pruning's criteria).
    """
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f"pruning ratio {ratio!r} is out of range; allowed: 0 <= ratio < 1")
    layer_ratios = dict(layer_ratios or {})
    unknown = sorted(set(layer_ratios) - set(kernels))
    if unknown:
        raise ConfigError(f"prune.layer_ratios names layer {unknown[0]!r}, which has no weights; prunable layers: {', '.join(kernels)}")
    score = (lambda w: np.abs(w)) if norm == "l1" else (lambda w: np.square(w.astype(np.float64)))
    if scope == "global" and not layer_ratios:
        names = list(kernels)
        flat = np.concatenate([score(kernels[n]).ravel() for n in names])
        keep = _k_smallest_mask(flat, int(round(ratio * flat.size)))
        out, start = {}, 0
        for n in names:
            size = kernels[n].size
            out[n] = keep[start:start + size].reshape(kernels[n].shape)
            start += size
        return out
    return {n: _k_smallest_mask(score(w), int(round(layer_ratios.get(n, ratio) * w.size))) for n, w in kernels.items()}


def apply_masks(model: keras.Model, masks: dict[str, np.ndarray]) -> None:
    for layer in prunable_layers(model):
        if layer.name in masks:
            layer.kernel.assign(layer.kernel.numpy() * masks[layer.name])


class _Mask:
    """A kernel constraint: the weight times its 0/1 mask (the optimizer applies it after every update)."""

    def __init__(self, mask: np.ndarray):
        self.mask = keras.ops.convert_to_tensor(mask.astype(np.float32))

    def __call__(self, w):
        return w * self.mask


@contextlib.contextmanager
def keep_masks(model: keras.Model, masks: dict[str, np.ndarray]):
    """Within the block, training re-zeroes the pruned weights after every optimizer step.

    Masking inside the compiled train step (a variable constraint) instead of a
    per-batch callback lets Keras run many steps per call (``steps_per_execution``);
    the weights are bit-for-bit those of masking after each batch.
    """
    layers = [l for l in prunable_layers(model) if l.name in masks]
    for layer in layers:
        layer.kernel.constraint = _Mask(masks[layer.name])
    try:
        yield model
    finally:
        for layer in layers:
            layer.kernel.constraint = None


def measured_ratio(model: keras.Model) -> float:
    """Fraction of kernel weights (biases excluded) that are exactly zero."""
    total, kept = weight_counts(model)
    return (total - kept) / total


def prune_unstructured(model: keras.Model, data: Dataset, schedule: PruningSchedule, *, scope: str,
                       layer_ratios: dict[str, float] | None, learning_rate: float, batch_size: int,
                       norm: str = "l1", desc: str = "prune") -> tuple[keras.Model, dict[str, np.ndarray]]:
    """Prune ``model`` in place following ``schedule``; returns it and its final keep-masks.

    ``layer_ratios`` scale with the schedule: at a step reaching global ratio
    r of the final R, a layer with ratio q is pruned to q * r / R.
    """
    masks: dict[str, np.ndarray] = {}
    plan = schedule.plan()
    for step, (ratio, epochs) in enumerate(tqdm(plan, desc=f"{desc} steps", unit="step", leave=False)):
        scale = ratio / schedule.ratio if schedule.ratio else 0.0
        step_layers = {n: q * scale for n, q in (layer_ratios or {}).items()}
        kernels = {l.name: l.kernel.numpy() for l in prunable_layers(model)}
        masks = magnitude_masks(kernels, ratio, scope, step_layers, norm)
        apply_masks(model, masks)
        if epochs:
            with keep_masks(model, masks):
                fit(model, data, epochs, batch_size, learning_rate, desc=f"{desc} step {step + 1}/{len(plan)} epoch")
    return model, masks
