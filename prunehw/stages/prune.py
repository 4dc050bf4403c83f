"""The ``prune`` stage: a variant's pruned float model, from the run's trained dense model or from a model file
given to prune (``prunehw prune --model``)."""

from __future__ import annotations

from pathlib import Path

from prunehw.core.artifacts import record_stage, sha256_file, stage_is_current, stage_key, update_variant
from prunehw.core.config import VariantConfig
from prunehw.stages import HARDWARE, code_key, up_to_date

__all__ = ["prune", "prune_model", "prune_source"]


def prune(flow, variant: VariantConfig, source: Path | None, force: bool = False) -> Path:
    """Prune ``source`` (default: the run's trained dense model) as ``variant`` describes (cached)."""
    from prunehw.model.network import check_fits, load_model, save_model
    from prunehw.variants import cost_code

    cfg = flow.cfg
    if variant.method == "dense" and source is None:
        return _dense(flow, variant, force)
    dense = Path(source) if source is not None else flow.train()
    out = flow.model_path(variant.name)
    if not dense.is_file():
        from prunehw.core.errors import ModelFileError

        raise ModelFileError(f"model file not found: {dense}")
    # (what pruning depends on: a variant that differs only in its quantization has the same key)
    key = stage_key(cfg.key("data", "prune"), variant.pruning().to_dict(), sha256_file(dense),
                    code_key(__name__, apart=HARDWARE),
                    cfg.array.to_dict() if variant.method == "matrix" and variant.tile_aware else None,
                    # (pruned to a hardware target: its cost functions and the models they are built on)
                    *([cost_code(), cfg.synth.target_mhz] if variant.target is not None else []))
    stage = f"prune:{variant.name}"
    if up_to_date(flow, stage, key, out, force) or _share_pruning(flow, variant, key, force):
        return out
    if source is not None:
        model = prune_source(flow, dense)
    else:
        model = load_model(dense)
        check_fits(model, flow.data, str(dense))
    model, index_path, got = prune_model(model, flow.data, cfg, variant, out.parent)
    outputs = [out] + ([index_path] if index_path else [])
    save_model(model, out)
    asked = {"ratio_requested": variant.ratio} if variant.ratio is not None else dict([variant.target])
    if variant.target_images_per_s is not None:     # (the cycle target it is, at the clock it is built for)
        from prunehw.variants import cycles_for_rate

        asked.update(target_cycles_for_rate=cycles_for_rate(variant.target_images_per_s, cfg),
                     target_clock_mhz=cfg.synth.target_mhz)
    measured, acc = got["ratio_measured"], got["accuracy"]
    update_variant(flow.run_dir, variant.name, {
        "method": variant.method, "schedule": variant.schedule, "criterion": variant.criterion,
        **asked, "ratio_measured": measured, "weights_total": got["weights_total"], "weights_kept": got["weights_kept"],
        "accuracy": {"float": acc, "images": {"float": int(len(flow.data.y_test))}},
    })
    record_stage(flow.run_dir, stage, key, outputs)
    flow.log(f"prune {variant.name}: {variant.schedule}, removed {measured:.4f} of "
             f"{got['weights_total']} weights, test accuracy {acc:.4f}; wrote {out}")
    if variant.ratio is not None and variant.method == "matrix" and variant.tile_aware and \
            abs(measured - variant.ratio) > 0.01:
        # say it: whole array tiles move the removed fraction away from the one asked for
        flow.log(f"prune {variant.name}: asked to remove {variant.ratio:.2f}, removed {measured:.4f}: kept rows and "
                 f"columns are rounded to whole {cfg.array.rows}x{cfg.array.cols} array tiles "
                 f"(tile_aware = false in the variant, or --no-tile-aware, gives the ratio asked for)")
    return out


def prune_model(model, data, cfg, variant: VariantConfig, folder: Path):
    """What the stage does without its cache and records, and what a sweep's task does too: ``model`` pruned as
    ``variant`` says (index maps, for matrix pruning, written into ``folder``); returns (the pruned model, the
    index maps' path or None, its figures: ``weights_total``, ``weights_kept``, ``ratio_measured`` and
    ``accuracy``, float, on the test set)."""
    from prunehw.model.network import weight_counts
    from prunehw.model.train import evaluate
    from prunehw.variants import prune_variant

    total, _ = weight_counts(model)
    model, index_path = prune_variant(model, data, cfg, variant, folder)
    _, kept = weight_counts(model)
    return model, index_path, {"weights_total": total, "weights_kept": kept, "ratio_measured": (total - kept) / total,
                               "accuracy": evaluate(model, data.x_test, data.y_test)}


def prune_source(flow, path: Path):
    """A model file given to prune (``prunehw prune --model``), imported as ``run.model`` is: rewritten into
    the supported layers and checked against the user's model and the data (once per file and flow)."""
    from prunehw.model.user_model import import_user_model

    cache = flow.__dict__.setdefault("_prune_sources", {})
    if path not in cache:
        cache[path] = import_user_model(Path(path), flow.dataset)[0]
    return cache[path]


def _dense(flow, variant: VariantConfig, force: bool) -> Path:
    """A dense variant: nothing removed. ``dense`` is the trained (or imported) network itself; another dense
    variant (``dense-w4-qat``: the same network quantized otherwise) takes a copy of it."""
    trained = flow.train()
    if variant.name == "dense":
        return trained
    out, key = flow.model_path(variant.name), stage_key(sha256_file(trained), code_key(__name__, apart=HARDWARE))
    if not up_to_date(flow, f"prune:{variant.name}", key, out, force):
        _copy_model(flow, "dense", variant.name, key, "nothing removed, the trained network")
    return out


def _share_pruning(flow, variant: VariantConfig, key: str, force: bool) -> bool:
    """A variant that differs from one already pruned only in its quantization takes that one's pruned model
    (pruning is deterministic: the same key gives the same bits) instead of pruning again."""
    base = variant.pruning()
    if force or base.name == variant.name or not stage_is_current(flow.run_dir, f"prune:{base.name}", key):
        return False
    _copy_model(flow, base.name, variant.name, key, f"the pruned model of {base.name} (same pruning)")
    return True


def _copy_model(flow, base: str, name: str, key: str, said: str) -> None:
    """Variant ``name`` takes variant ``base``'s float model (``copy_pruned``), recorded as its prune stage."""
    from prunehw.variants import copy_pruned

    outputs = copy_pruned(flow.run_dir, base, name)
    record_stage(flow.run_dir, f"prune:{name}", key, outputs)
    flow.log(f"prune {name}: {said}, {outputs[0]}")
