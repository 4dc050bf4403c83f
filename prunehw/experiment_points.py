"""The experiments' points: each a pruned model of the run's dense network, measured for what its figure needs.

Points are kept in the project's cache (``core.artifacts.Cache``, index ``experiments/points.json``), named
by their parameters and keyed by the dense model's hash and the fine-tuning budget, with each point's pruned
model as its output: a rerun redoes only new points, a later figure can add sizes or timings to an existing
point, and a point whose model file changed is pruned again.
"""

from __future__ import annotations

import json

import numpy as np

from prunehw.core.artifacts import Cache, code_closure, code_digest, sha256_file, stage_key

__all__ = ["Points"]


class Points:
    """Cached experiment points of one run."""

    def __init__(self, flow, force: bool):
        self.flow = flow
        self.cfg = flow.cfg
        self.dir = flow.run_dir / "experiments"
        self.dense_path = flow.train()
        self.cache = Cache(self.dir, index="points.json", table="points")
        self._cost_fns: dict = {}     # the hardware cost functions of the dense model, built once
        # (the code is in the key, this module's and all it imports: a point pruned by older code is pruned again)
        self.key = stage_key(sha256_file(self.dense_path), self._budget(), code_digest("model"), code_closure(__name__))
        if force:
            self.cache.forget()

    def _budget(self) -> dict:
        e = self.cfg.experiments
        return {"steps": e.steps, "finetune_epochs": e.finetune_epochs, "prune": self.cfg.prune.to_dict(),
                "array": self.cfg.array.to_dict(), "seed": self.cfg.seed}

    def dense(self):
        from prunehw.model.network import load_model

        return load_model(self.dense_path)

    def get(self, kind: str, sizes: bool = False, timing: bool = False, **params) -> dict:
        """The point's record, pruning (once) and measuring what is asked and not yet measured.

        The pruned model of each point is kept under ``experiments/models/``, so
        a later figure can add sizes or timings without pruning again.
        """
        from prunehw.model.network import load_model, save_model

        name = json.dumps({"kind": kind, **params}, sort_keys=True)
        model_path = self.dir / "models" / (stage_key(name) + ".keras")
        entry = self.cache.current(name, self.key)
        model = None
        if entry is None:
            model, record = getattr(self, f"_{kind}")(**params)
            if model is not None:
                save_model(model, model_path)
            record, outputs = {"kind": kind, **params, **record}, [model_path] if model is not None else []
        else:
            record, outputs = entry["record"], [self.dir / rel for rel in entry["outputs"]]
        need_sizes = sizes and "keras_bytes" not in record
        need_time = timing and "seconds_dense_format_runs" not in record
        if need_sizes or need_time:
            model = model or load_model(model_path)
            record.update(self._measure(model, need_sizes, need_time, sparse=kind == "unstructured"))
        if entry is None or need_sizes or need_time:
            self.cache.record(name, self.key, outputs, record=record)
        return record

    def _measure(self, model, sizes: bool, timing: bool, sparse: bool = False) -> dict:
        from prunehw.model.inference import dense_forward, saved_sizes, sparse_forward, time_inference

        out: dict = {}
        data = self.flow.data
        if sizes:
            out.update({f"{k}_bytes": v for k, v in saved_sizes(model).items()})
        if timing:
            # every run is kept (a verdict needs the spread); the median is the figure plotted
            reps = self.cfg.experiments.timing_repeats
            forms = {"dense_format": dense_forward} | ({"sparse_format": sparse_forward} if sparse else {})
            for form, forward in forms.items():
                runs = time_inference(forward(model), data.x_test, reps)
                out[f"seconds_{form}_runs"] = runs
                out[f"seconds_{form}"] = float(np.median(runs))
        return out

    def _basics(self, model, total: int) -> dict:
        from prunehw.model.network import weight_counts
        from prunehw.model.train import evaluate

        _, kept = weight_counts(model)
        return {"accuracy": evaluate(model, self.flow.data.x_test, self.flow.data.y_test), "weights_kept": kept,
                "ratio_measured": 1 - kept / total,
                "params_stored": int(sum(np.prod(w.shape) for w in model.get_weights()))}

    def _schedule(self, kind: str, ratio: float, full_budget: bool = False):
        from prunehw.model.pruning_schedule import PruningSchedule

        if full_budget:
            return PruningSchedule(kind, ratio, self.cfg.prune.steps, self.cfg.prune.finetune_epochs)
        e = self.cfg.experiments
        return PruningSchedule(kind, ratio, e.steps, e.finetune_epochs)

    def _unstructured(self, schedule: str, ratio: float, scope: str, full_budget: bool = False):
        from prunehw.model.network import prunable_layers, set_seed, weight_counts
        from prunehw.model.prune import prune_unstructured

        model = self.dense()
        total, _ = weight_counts(model)
        set_seed(self.cfg.seed)
        layers = {l.name: type(l).__name__ for l in prunable_layers(model)}
        if scope == "all":
            kw = dict(scope="global", layer_ratios=None)
        else:
            target = "Conv2D" if scope == "conv" else "Dense"
            kw = dict(scope="per_layer", layer_ratios={n: (ratio if t == target else 0.0) for n, t in layers.items()})
        p = self.cfg.prune
        prune_unstructured(model, self.flow.data, self._schedule(schedule, ratio, full_budget), learning_rate=p.learning_rate,
                           batch_size=p.batch_size, desc=f"{scope} {schedule} {ratio:.2f}", **kw)
        return model, self._basics(model, total)

    def _matrix(self, ratio: float, criterion: str):
        return self._pruned_matrix(ratio, criterion, f"matrix {criterion} {ratio:.2f}")

    def _matrix_cost(self, target: int, criterion: str, cost_code: str):
        """Matrix pruning to ``target`` cycles per image, structures ranked by loss per cycle saved (the schedule's
        ratio only shapes the steps; ``cost_code`` only names the point)."""
        return self._pruned_matrix(0.5, criterion, f"matrix {criterion} to {target} cycles", cost=self.cycles,
                                   target=target)

    def _matrix_energy(self, target_pj: float, criterion: str, cost_code: str):
        """Matrix pruning to ``target_pj`` per inference, structures ranked by loss per pJ saved."""
        return self._pruned_matrix(0.5, criterion, f"matrix {criterion} to {target_pj / 1e6:.3f} uJ",
                                   cost=self.energy, target=target_pj)

    def _pruned_matrix(self, ratio: float, criterion: str, desc: str, **to_cost):
        from prunehw.model.matrix_prune import prune_matrix
        from prunehw.model.network import set_seed, weight_counts

        model = self.dense()
        total, _ = weight_counts(model)
        set_seed(self.cfg.seed)
        p = self.cfg.prune
        small, _, maps = prune_matrix(model, self.flow.data, self._schedule("iterative", ratio), criterion=criterion,
                                      array=self.cfg.array, learning_rate=p.learning_rate, batch_size=p.batch_size,
                                      calibration=p.calibration_images, seed=self.cfg.seed, desc=desc, **to_cost)
        return small, {**self._basics(small, total), "kept_shapes": [[len(m.rows), len(m.cols)] for m in maps]}

    def cycles(self, counts) -> int:
        """Cycles per image on the run's array of the dense model pruned to ``counts`` (the accelerator's exact
        cycle model, ``prunehw.hw.models.cost.cycle_cost``)."""
        return self._costs("cycle_cost")([tuple(c) for c in counts])

    def energy(self, counts) -> float:
        """pJ per inference of the dense model pruned to ``counts`` (``prunehw.hw.models.cost.energy_cost``)."""
        return self._costs("energy_cost")([tuple(c) for c in counts])

    def _costs(self, which: str):
        if which not in self._cost_fns:
            from prunehw import variants

            self._cost_fns[which] = getattr(variants, which)(self.dense(), self.flow.data, self.cfg)
        return self._cost_fns[which]

    def _sensitivity(self, layer: str, ratio: float) -> dict:
        from prunehw.model.network import prunable_layers
        from prunehw.model.prune import apply_masks, magnitude_masks
        from prunehw.model.train import evaluate

        model = self.dense()
        kernels = {l.name: l.kernel.numpy() for l in prunable_layers(model)}
        apply_masks(model, magnitude_masks({layer: kernels[layer]}, ratio, "per_layer"))
        return None, {"accuracy": evaluate(model, self.flow.data.x_test, self.flow.data.y_test)}

    def _peer(self, schedule: str, ratio: float, full_budget: bool = False):
        from prunehw.model.tfmot_peer import run_peer

        sched = self._schedule(schedule, ratio, full_budget)
        epochs = sum(e for _, e in sched.plan())
        p = self.cfg.prune
        return None, run_peer(self.dense(), self.cfg.data.to_dict(), schedule, ratio, epochs, p.batch_size,
                              p.learning_rate, self.cfg.seed)
