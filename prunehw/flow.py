"""Flow orchestration: each stage reads the previous stage's artifacts and writes its own.

A stage is skipped when the manifest says it last ran with the same cache key
(config sections + input hashes) and its outputs still hash as recorded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from functools import cached_property
from pathlib import Path

from prunehw.artifacts import record_stage, sha256_file, stage_is_current, update_variant, update_summary
from prunehw.config import RunConfig, VariantConfig
from prunehw.manifest import write_run_manifest

__all__ = ["Flow"]


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Flow:
    """The stages of one run (``cfg.run_dir``), sharing the loaded data set."""

    def __init__(self, cfg: RunConfig, log=print):
        self.cfg = cfg
        self.log = log

    @cached_property
    def data(self):
        from prunehw.model.data import load_dataset

        data = load_dataset(self.cfg.data)
        write_run_manifest(self.cfg, data.source, data.digest)
        return data

    @property
    def run_dir(self) -> Path:
        return self.cfg.run_dir

    def model_path(self, variant: str) -> Path:
        return self.run_dir / variant / "model.keras"

    # -- train ------------------------------------------------------------------------
    def train(self, force: bool = False) -> Path:
        from prunehw.model.network import build_model, save_model, weight_counts
        from prunehw.model.train import evaluate, train_float

        out = self.model_path("dense")
        key = _key(self.cfg.key("data", "network", "train"))
        if not force and stage_is_current(self.run_dir, "train", key):
            self.log(f"train: up to date, {out}")
            return out
        data, t = self.data, self.cfg.train
        model = build_model(self.cfg.network, data.input_shape, data.n_classes, self.cfg.seed)
        seconds = train_float(model, data, t.epochs, t.batch_size, t.learning_rate)
        acc = evaluate(model, data.x_test, data.y_test)
        total, kept = weight_counts(model)
        save_model(model, out)
        update_summary(self.run_dir, {"train": {"seconds": round(seconds, 2), "epochs": t.epochs}})
        update_variant(self.run_dir, "dense", {
            "method": "dense", "ratio_requested": 0.0, "ratio_measured": (total - kept) / total,
            "weights_total": total, "weights_kept": kept,
            "accuracy": {"float": acc, "images": {"float": int(len(data.y_test))}},
        })
        record_stage(self.run_dir, "train", key, [out])
        self.log(f"train: test accuracy {acc:.4f} on {len(data.y_test)} images, trained in {seconds:.1f} s; wrote {out}")
        return out

    # -- prune ------------------------------------------------------------------------
    def prune(self, variant: VariantConfig, force: bool = False, source: Path | None = None) -> Path:
        """Prune ``source`` (default: this run's trained dense model) as ``variant`` describes."""
        from prunehw.model.network import check_fits, load_model, save_model, weight_counts
        from prunehw.model.prune import prune_unstructured
        from prunehw.model.pruning_schedule import PruningSchedule
        from prunehw.model.train import evaluate

        dense = Path(source) if source is not None else self.train()
        out = self.model_path(variant.name)
        p = self.cfg.prune
        if not dense.is_file():
            from prunehw.errors import ModelFileError

            raise ModelFileError(f"model file not found: {dense}")
        key = _key(self.cfg.key("data", "prune"), variant.to_dict(), sha256_file(dense),
                   self.cfg.array.to_dict() if variant.method == "matrix" and variant.tile_aware else None)
        stage = f"prune:{variant.name}"
        if not force and stage_is_current(self.run_dir, stage, key):
            self.log(f"prune {variant.name}: up to date, {out}")
            return out
        from prunehw.model.network import set_seed

        model = load_model(dense)
        check_fits(model, self.data, str(dense))
        total_dense, _ = weight_counts(model)
        set_seed(self.cfg.seed)
        schedule = PruningSchedule(variant.schedule, variant.ratio, p.steps, p.finetune_epochs)
        outputs = [out]
        extra: dict = {}
        if variant.method == "unstructured":
            prune_unstructured(model, self.data, schedule, scope=p.scope, layer_ratios=p.layer_ratios,
                               learning_rate=p.learning_rate, batch_size=p.batch_size, norm=variant.criterion,
                               desc=variant.name)
        else:
            from prunehw.model.matrix_prune import prune_matrix_flow

            model, index_path = prune_matrix_flow(model, self.data, schedule, variant, self.cfg, out.parent)
            outputs.append(index_path)
        acc = evaluate(model, self.data.x_test, self.data.y_test)
        _, kept = weight_counts(model)
        save_model(model, out)
        update_variant(self.run_dir, variant.name, {
            "method": variant.method, "schedule": variant.schedule, "criterion": variant.criterion,
            "ratio_requested": variant.ratio, "ratio_measured": (total_dense - kept) / total_dense,
            "weights_total": total_dense, "weights_kept": kept,
            "accuracy": {"float": acc, "images": {"float": int(len(self.data.y_test))}}, **extra,
        })
        record_stage(self.run_dir, stage, key, outputs)
        self.log(f"prune {variant.name}: {schedule.kind}, removed {(total_dense - kept) / total_dense:.4f} of "
                 f"{total_dense} weights, test accuracy {acc:.4f}; wrote {out}")
        return out

    def prune_all(self, force: bool = False) -> list[Path]:
        return [self.prune(v, force) for v in self.cfg.variants]

    def with_variant(self, variant: VariantConfig) -> "Flow":
        """This flow with ``variant`` added to (or replacing its namesake in) the config."""
        others = tuple(v for v in self.cfg.variants if v.name != variant.name)
        flow = Flow(dataclasses.replace(self.cfg, variants=others + (variant,)), self.log)
        if "data" in self.__dict__:
            flow.__dict__["data"] = self.data
        return flow
