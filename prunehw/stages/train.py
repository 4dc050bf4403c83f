"""The ``train`` stage: the float network trained from the config, or the user's model (``run.model``) imported
in its place; either way checked against the data and the hardware and saved as ``dense/model.keras``."""

from __future__ import annotations

from pathlib import Path

from prunehw.core.artifacts import record_stage, sha256_file, stage_key, update_summary, update_variant
from prunehw.stages import HARDWARE, code_key, up_to_date

__all__ = ["train", "train_key", "user_model", "check_fits_hardware"]


def train(flow, force: bool = False) -> Path:
    """Train the float network (cached); returns ``dense/model.keras``."""
    if flow.cfg.model:
        return _import_model(flow, force)
    from prunehw.model.network import build_model, save_model
    from prunehw.model.train import evaluate, train_float

    out = flow.model_path("dense")
    key = train_key(flow)
    if up_to_date(flow, "train", key, out, force):
        return out
    data, t = flow.data, flow.cfg.train
    model = build_model(flow.cfg.network, data.input_shape, data.n_classes, flow.cfg.seed)
    seconds = train_float(model, data, t.epochs, t.batch_size, t.learning_rate)
    acc = evaluate(model, data.x_test, data.y_test)
    save_model(model, out)
    update_summary(flow.run_dir, {"train": {"seconds": round(seconds, 2), "epochs": t.epochs}})
    _record_dense(flow, model, acc)
    record_stage(flow.run_dir, "train", key, [out])
    flow.log(f"train: test accuracy {acc:.4f} on {len(data.y_test)} images, trained in {seconds:.1f} s; wrote {out}")
    return out


def train_key(flow) -> str:
    """The train stage's cache key: the config's network and training, or the imported file's hash."""
    if not flow.cfg.model:
        return stage_key(flow.cfg.key("data", "network", "train"), code_key(__name__, apart=HARDWARE))
    src = Path(flow.cfg.model)
    if not src.is_file():
        from prunehw.core.errors import ModelFileError

        raise ModelFileError(f"run.model: model file not found: {src}")
    return stage_key(flow.cfg.key("data"), sha256_file(src), code_key(__name__, apart=HARDWARE))


def user_model(flow):
    """The user's model (``run.model``) rewritten into the supported layers and checked against the data and
    against the user's own model: (model, rewrite notes, largest difference from the user's outputs); imported
    once per flow."""
    if "_user_model" not in flow.__dict__:
        from prunehw.model.user_model import import_user_model

        flow.__dict__["_user_model"] = import_user_model(Path(flow.cfg.model), flow.dataset)
    return flow.__dict__["_user_model"]


def check_fits_hardware(flow, model, where: str) -> None:
    """What the array, its memories or its counters cannot hold, said before anything is trained or written
    (the rtl stage would say it after pruning and quantizing). The dense model's accelerator is laid out from
    a contract quantized on a few images (the flow's own contract comes later, after pruning)."""
    cfg = flow.cfg
    channels, cols = model.inputs[0].shape[-1], cfg.array.cols
    if channels > cols:
        from prunehw.core.errors import ConfigError

        raise ConfigError(f"{where}: the input has {channels} channels but the {cfg.array.rows}x{cols} array "
                          f"holds at most {cols}; allowed: array.cols >= {channels}")
    from prunehw.export.contract import Contract
    from prunehw.export.quantize import quantize
    from prunehw.hw.models.cycle_model import activity_model
    from prunehw.hw.generate import check_counters_fit, check_memory_fits, program_for

    program = program_for(Contract(*quantize(model, flow.dataset.x_train[:32], cfg.quant.weight_bits,
                                             cfg.quant.act_bits)), cfg.array)
    check_counters_fit(activity_model(program))
    check_memory_fits(program, where)


def _import_model(flow, force: bool = False) -> Path:
    """The user's model (``run.model``) in place of training: rewritten into the supported layers, checked
    against the user's model, the data and the hardware, saved as ``dense/model.keras``."""
    from prunehw.model.network import save_model
    from prunehw.model.train import evaluate

    src, out = Path(flow.cfg.model), flow.model_path("dense")
    key = train_key(flow)
    if up_to_date(flow, "train", key, out, force):
        return out
    model, notes, diff = user_model(flow)
    check_fits_hardware(flow, model, str(src))
    data = flow.data
    acc = evaluate(model, data.x_test, data.y_test)
    save_model(model, out)
    update_summary(flow.run_dir, {"train": {"imported_from": str(src), "rewrites": notes}})
    _record_dense(flow, model, acc)
    record_stage(flow.run_dir, "train", key, [out])
    for note in notes:
        flow.log(f"train: {note}")
    flow.log(f"train: imported {src} ({len(notes)} rewrites; outputs within {diff:.2g} of yours), test accuracy "
             f"{acc:.4f} on {len(data.y_test)} images; wrote {out}")
    return out


def _record_dense(flow, model, acc: float) -> None:
    """The dense variant's entry in ``summary.json``: nothing removed, its float test accuracy."""
    from prunehw.model.network import weight_counts

    total, kept = weight_counts(model)
    update_variant(flow.run_dir, "dense", {
        "method": "dense", "ratio_requested": 0.0, "ratio_measured": (total - kept) / total,
        "weights_total": total, "weights_kept": kept,
        "accuracy": {"float": acc, "images": {"float": int(len(flow.data.y_test))}},
    })
