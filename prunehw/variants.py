"""What makes a variant from a trained model, shared by the flow's stages and the sweep's tasks: pruning with the
run's budget, the calibration images, and quantization to the numeric contract at the variant's widths."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from prunehw.core.config import RunConfig, VariantConfig

__all__ = ["calibration_images", "prune_variant", "quantize_variant"]


def prune_variant(model, data, cfg: RunConfig, variant: VariantConfig, out_dir: Path):
    """Prune ``model`` (in place, or a smaller copy for matrix pruning) as ``variant`` says, with ``cfg.prune``'s budget.

    Returns the pruned model and, for matrix pruning, the index maps written to ``out_dir``.
    """
    from prunehw.model.network import set_seed
    from prunehw.model.prune import prune_unstructured
    from prunehw.model.pruning_schedule import PruningSchedule

    p = cfg.prune
    set_seed(cfg.seed)
    schedule = PruningSchedule(variant.schedule, variant.ratio, p.steps, p.finetune_epochs)
    if variant.method == "unstructured":
        prune_unstructured(model, data, schedule, scope=p.scope, layer_ratios=p.layer_ratios,
                           learning_rate=p.learning_rate, batch_size=p.batch_size, norm=variant.criterion,
                           desc=variant.name)
        return model, None
    from prunehw.model.matrix_form import save_maps
    from prunehw.model.matrix_prune import prune_matrix

    # matrix-based: prune, then write the index maps beside the model
    small, geo, maps = prune_matrix(
        model, data, schedule, criterion=variant.criterion, array=cfg.array if variant.tile_aware else None,
        learning_rate=p.learning_rate, batch_size=p.batch_size, calibration=p.calibration_images,
        seed=cfg.seed, desc=variant.name)
    return small, save_maps(out_dir / "index_maps.json", geo, maps)


def calibration_images(data, cfg: RunConfig) -> np.ndarray:
    """The ``cfg.quant.calibration_images`` training images (chosen by the run's seed) that set activation formats."""
    rng = np.random.default_rng(cfg.seed)
    n = min(cfg.quant.calibration_images, len(data.x_train))
    return data.x_train[np.sort(rng.choice(len(data.x_train), size=n, replace=False))]


def quantize_variant(model, data, cfg: RunConfig, maps_path: Path | None = None, dense_path: Path | None = None,
                     bits: tuple[int, int] | None = None):
    """The numeric contract (spec, weights, biases) of a float ``model``, calibrated on ``cfg.quant`` training images,
    at ``bits`` (weight, activation; default ``cfg.quant``'s).

    ``maps_path`` and ``dense_path``: the index maps of a matrix-pruned model
    and the unpruned model they refer to, so rows it dropped are recorded as
    absent (the unpruned model is only loaded then).
    """
    from prunehw.export.quantize import quantize

    q = cfg.quant
    rows_kept = None
    if maps_path is not None:
        from prunehw.model.matrix_form import geometry, kept_small_rows, load_maps
        from prunehw.model.network import load_model

        rows_kept = kept_small_rows(geometry(load_model(dense_path)), load_maps(maps_path))
    wb, ab = bits or (q.weight_bits, q.act_bits)
    return quantize(model, calibration_images(data, cfg), wb, ab, rows_kept)
