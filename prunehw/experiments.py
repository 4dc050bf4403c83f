"""The seed report's experiments (Figs 11-14, 18-20) and its claims, measured on our network.

Every point prunes the run's trained dense model with the ``[experiments]``
budget, measures what its figure needs, and is cached in
``experiments/points.json`` by its parameters, so a rerun redoes only new
points. Each figure is a CSV plus a PNG; ``claims.csv`` puts the report's
claims beside our figures.
"""

from __future__ import annotations

import json
from pathlib import Path

from tqdm.auto import tqdm

from prunehw.claims import claims_table
from prunehw.core.artifacts import pyplot, read_json, write_csv, write_png
from prunehw.experiment_points import Points

__all__ = ["run_experiments", "EXPERIMENTS"]

# (the cached points live in ``experiment_points``, the claims table in ``claims``)



def _plot(path: Path, title: str, xlabel: str, ylabel: str, series: dict[str, tuple[list, list]],
          logy: bool = False, baseline: tuple[str, float] | None = None) -> Path:
    fig, ax = pyplot().subplots(figsize=(6.4, 4.2), dpi=120)
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", label=label)
    if baseline:
        ax.axhline(baseline[1], color="grey", linestyle="--", label=baseline[0])
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return write_png(fig, path)


def run_experiments(flow, only: list[str] | None = None, force: bool = False, log=print) -> dict:
    """Run the selected experiments (all by default); returns {name: [written paths]}."""
    unknown = sorted(set(only or []) - set(EXPERIMENTS))
    if unknown:
        from prunehw.core.errors import ConfigError

        raise ConfigError(f"experiment {unknown[0]!r} is unknown; allowed: {', '.join(EXPERIMENTS)}")
    pts = Points(flow, force)
    chosen = [e for e in EXPERIMENTS if not only or e in only]
    written: dict[str, list[Path]] = {}
    for name in tqdm(chosen, desc="experiments", unit="figure"):
        written[name] = FIGURES[name](pts, log)
        for path in written[name]:
            log(f"experiments {name}: wrote {path}")
    return written


def _dense_acc(pts) -> float:
    return read_json(pts.flow.layout.summary)["variants"]["dense"]["accuracy"]["float"]


def _fig11(pts, log) -> list[Path]:
    e = pts.cfg.experiments
    rows = []
    for scope, schedules in (("all", ("oneshot", "iterative")), ("conv", ("iterative",)), ("dense", ("iterative",))):
        for schedule in schedules:
            for r in e.ratios:
                p = pts.get("unstructured", schedule=schedule, ratio=r, scope=scope)
                rows.append({"scope": scope, "schedule": schedule, "ratio": r, "ratio_measured": round(p["ratio_measured"], 6),
                             "accuracy": p["accuracy"]})
    series = {f"{r['scope']} layers, {r['schedule']}": None for r in rows}
    for label in series:
        sel = [r for r in rows if f"{r['scope']} layers, {r['schedule']}" == label]
        series[label] = ([r["ratio"] for r in sel], [100 * r["accuracy"] for r in sel])
    d = pts.dir
    return [write_csv(d / "fig11_accuracy_vs_ratio.csv", rows),
            _plot(d / "fig11_accuracy_vs_ratio.png", "Fig 11: unstructured pruning, accuracy vs ratio",
                  "pruning ratio (fraction of the pruned layers' weights removed)", "test accuracy (%)", series,
                  baseline=("dense", 100 * _dense_acc(pts)))]


def _fig12(pts, log) -> list[Path]:
    from prunehw.model.network import prunable_layers

    layers = [l.name for l in prunable_layers(pts.dense())]
    rows = [{"layer": n, "ratio": r, "accuracy": pts.get("sensitivity", layer=n, ratio=r)["accuracy"]}
            for n in layers for r in pts.cfg.experiments.sensitivity_ratios]
    series = {n: ([r["ratio"] for r in rows if r["layer"] == n], [100 * r["accuracy"] for r in rows if r["layer"] == n])
              for n in layers}
    d = pts.dir
    return [write_csv(d / "fig12_layer_sensitivity.csv", rows),
            _plot(d / "fig12_layer_sensitivity.png", "Fig 12: sensitivity of each layer (one-shot, no fine-tuning)",
                  "fraction of this layer's weights removed", "test accuracy (%)", series,
                  baseline=("dense", 100 * _dense_acc(pts)))]


def _fig13(pts, log) -> list[Path]:
    rows = []
    for r in pts.cfg.experiments.size_ratios:
        p = pts.get("unstructured", schedule="iterative", ratio=r, scope="all", sizes=True)
        rows.append({"ratio": r, "ratio_measured": round(p["ratio_measured"], 6), "weights_kept": p["weights_kept"],
                     "keras_bytes": p["keras_bytes"], "savedmodel_bytes": p["savedmodel_bytes"], "gzip_bytes": p["gzip_bytes"]})
    xs = [r["ratio"] for r in rows]
    d = pts.dir
    out = [write_csv(d / "fig13_size_vs_ratio.csv", rows)]
    out.append(_plot(d / "fig13_size_vs_ratio.png", "Fig 13: unstructured pruning, weights and saved size",
                     "pruning ratio", "count / bytes (log scale)",
                     {"non-zero weights": (xs, [r["weights_kept"] for r in rows]),
                      ".keras bytes": (xs, [r["keras_bytes"] for r in rows]),
                      "SavedModel bytes": (xs, [r["savedmodel_bytes"] for r in rows]),
                      ".keras gzip bytes": (xs, [r["gzip_bytes"] for r in rows])}, logy=True))
    return out


def _fig14_20(pts, log) -> list[Path]:
    rows = []
    for r in pts.cfg.experiments.ratios:
        u = pts.get("unstructured", schedule="iterative", ratio=r, scope="all", timing=True)
        m = pts.get("matrix", ratio=r, criterion="l1", timing=True)
        rows.append({"ratio": r, "images": len(pts.flow.data.x_test),
                     "seconds_dense_with_zeros": u["seconds_dense_format"], "seconds_tf_sparse": u["seconds_sparse_format"],
                     "seconds_matrix_pruned": m["seconds_dense_format"], "matrix_ratio_measured": round(m["ratio_measured"], 6)})
    dense = pts.get("unstructured", schedule="iterative", ratio=0.0, scope="all", timing=True)
    xs = [r["ratio"] for r in rows]
    d = pts.dir
    return [write_csv(d / "fig14_20_time_vs_ratio.csv", rows),
            _plot(d / "fig14_20_time_vs_ratio.png", "Figs 14/20: inference time on the test set (CPU, TensorFlow)",
                  "pruning ratio", "seconds per 10k images (log scale)",
                  {"unstructured, dense tensors with zeros": (xs, [r["seconds_dense_with_zeros"] for r in rows]),
                   "unstructured, tf.sparse": (xs, [r["seconds_tf_sparse"] for r in rows]),
                   "matrix-pruned (smaller dense)": (xs, [r["seconds_matrix_pruned"] for r in rows])},
                  logy=True, baseline=("unpruned", dense["seconds_dense_format"]))]


def _fig18_19(pts, log) -> list[Path]:
    rows = []
    for r in pts.cfg.experiments.ratios:
        u = pts.get("unstructured", schedule="iterative", ratio=r, scope="all", sizes=True)
        m = pts.get("matrix", ratio=r, criterion="l1", sizes=True)
        rows.append({"ratio": r, "unstructured_accuracy": u["accuracy"], "matrix_accuracy": m["accuracy"],
                     "matrix_ratio_measured": round(m["ratio_measured"], 6),
                     "unstructured_params_stored": u["params_stored"], "matrix_params_stored": m["params_stored"],
                     "unstructured_nonzero": u["weights_kept"], "matrix_nonzero": m["weights_kept"],
                     "unstructured_savedmodel_bytes": u["savedmodel_bytes"], "matrix_savedmodel_bytes": m["savedmodel_bytes"],
                     "unstructured_gzip_bytes": u["gzip_bytes"], "matrix_gzip_bytes": m["gzip_bytes"],
                     "matrix_kept_shapes": json.dumps(m["kept_shapes"])})
    xs = [r["ratio"] for r in rows]
    d = pts.dir
    return [write_csv(d / "fig18_19_matrix_vs_unstructured.csv", rows),
            _plot(d / "fig18_accuracy.png", "Fig 18: matrix-based vs unstructured pruning", "pruning ratio (requested)",
                  "test accuracy (%)", {"unstructured (iterative)": (xs, [100 * r["unstructured_accuracy"] for r in rows]),
                                        "matrix-based (iterative, l1, tile-aware)": (xs, [100 * r["matrix_accuracy"] for r in rows])},
                  baseline=("dense", 100 * _dense_acc(pts))),
            _plot(d / "fig19_size.png", "Fig 19: stored parameters and SavedModel size", "pruning ratio (requested)",
                  "count / bytes (log scale)",
                  {"unstructured params stored": (xs, [r["unstructured_params_stored"] for r in rows]),
                   "matrix params stored": (xs, [r["matrix_params_stored"] for r in rows]),
                   "unstructured SavedModel bytes": (xs, [r["unstructured_savedmodel_bytes"] for r in rows]),
                   "matrix SavedModel bytes": (xs, [r["matrix_savedmodel_bytes"] for r in rows])}, logy=True)]


def _criteria(pts, log) -> list[Path]:
    ratio = max((v.ratio for v in pts.cfg.variants if v.method == "matrix"), default=0.8)
    rows = []
    for c in ("l1", "l2", "taylor", "fisher"):
        p = pts.get("matrix", ratio=ratio, criterion=c)
        rows.append({"criterion": c, "ratio": ratio, "ratio_measured": round(p["ratio_measured"], 6),
                     "weights_kept": p["weights_kept"], "accuracy": p["accuracy"], "kept_shapes": json.dumps(p["kept_shapes"])})
    return [write_csv(pts.dir / "criteria.csv", rows)]


def _budget(pts, log) -> list[Path]:
    """One-shot vs iterative at the default variant's ratio with the full [prune] budget, ours and TFMOT's."""
    from prunehw.model.tfmot_peer import peer_available

    ratio = max((v.ratio for v in pts.cfg.variants if v.method == "unstructured"), default=0.9)
    rows = []
    reason = peer_available() if pts.cfg.experiments.peer else "disabled by experiments.peer = false"
    for schedule in ("oneshot", "iterative"):
        p = pts.get("unstructured", schedule=schedule, ratio=ratio, scope="all", full_budget=True)
        rows.append({"tool": "prunehw", "schedule": schedule, "ratio": ratio, "ratio_measured": round(p["ratio_measured"], 6),
                     "epochs": pts.cfg.prune.budget_epochs, "accuracy": p["accuracy"], "note": ""})
        if reason is None:
            q = pts.get("peer", schedule=schedule, ratio=ratio, full_budget=True)
            rows.append({"tool": "tfmot prune_low_magnitude", "schedule": schedule, "ratio": ratio,
                         "ratio_measured": round(q["ratio_measured"], 6), "epochs": pts.cfg.prune.budget_epochs,
                         "accuracy": q["accuracy"], "note": f"SavedModel with pruning state {q['savedmodel_bytes_with_pruning_state']} B, stripped {q['savedmodel_bytes_stripped']} B"})
        else:
            log(f"experiments budget: TFMOT peer skipped: {reason}")
    return [write_csv(pts.dir / "oneshot_vs_iterative.csv", rows)]


#: the bit widths of the ``bits`` figure (weights and activations alike)
BIT_WIDTHS = (2, 3, 4, 5, 6, 7, 8)


def _bits(pts, log) -> list[Path]:
    """Golden-model accuracy of each configured variant at 2..8-bit weights and activations: post-training
    quantization (PTQ) and quantization-aware fine-tuning through the contract (QAT, ``experiments.finetune_epochs``
    epochs, at least one) of the same pruned weights."""
    from tqdm.auto import tqdm

    from prunehw.export.contract import Contract
    from prunehw.export.golden import golden_accuracy
    from prunehw.export.quantize import quantize
    from prunehw.model.network import load_model
    from prunehw.model.train import evaluate
    from prunehw.variants import calibration_images

    data, cfg = pts.flow.data, pts.cfg
    calib = calibration_images(data, cfg)

    def accuracy(model, bits):
        c = Contract(*quantize(model, calib, bits, bits))
        return golden_accuracy(c, data.x_test, data.y_test)

    rows = []
    bar = tqdm(total=len(pts.flow.variant_names()) * len(BIT_WIDTHS), desc="bits: PTQ and QAT", unit="point")
    for v in pts.flow.variant_names():
        model = load_model(pts.flow.float_model(v))
        float_acc = evaluate(model, data.x_test, data.y_test)
        for bits in BIT_WIDTHS:
            rows.append(_bits_point(model, v, bits, float_acc, accuracy, data, calib, cfg))
            bar.update(1)
    bar.close()
    path = write_csv(pts.dir / "bits.csv", rows)
    series = {}
    for v in pts.flow.variant_names():
        mine = [r for r in rows if r["variant"] == v]
        series[f"{v} PTQ"] = ([r["weight_bits"] for r in mine], [100 * r["int_accuracy"] for r in mine])
        series[f"{v} QAT"] = ([r["weight_bits"] for r in mine], [100 * r["qat_int_accuracy"] for r in mine])
    return [path, _plot(pts.dir / "bits.png", "PTQ and QAT: accuracy vs bit width", "bits (weights and activations)",
                        "golden-model test accuracy (%)", series)]


def _bits_point(model, variant: str, bits: int, float_acc: float, accuracy, data, calib, cfg) -> dict:
    """One row of ``bits.csv``: ``model`` quantized after training (PTQ) and after fine-tuning a copy through the
    contract (QAT) at ``bits``-bit weights and activations."""
    import keras

    from prunehw.export.qat import qat_finetune
    from prunehw.model.network import set_seed

    ptq = accuracy(model, bits)
    set_seed(cfg.seed)
    tuned = keras.models.clone_model(model)
    tuned.set_weights(model.get_weights())
    qat_finetune(tuned, data.x_train, data.y_train, calib, bits, bits, max(1, cfg.experiments.finetune_epochs),
                 cfg.prune.batch_size, 1e-4, cfg.seed, desc=f"QAT {variant} {bits}-bit")
    qat = accuracy(tuned, bits)
    return {"variant": variant, "weight_bits": bits, "act_bits": bits, "float_accuracy": float_acc,
            "int_accuracy": ptq, "loss_points": round(100 * (float_acc - ptq), 3),
            "qat_int_accuracy": qat, "qat_loss_points": round(100 * (float_acc - qat), 3)}


def _budget_aware(pts, log) -> list[Path]:
    """Matrix pruning to a cycle or energy target (structures by saliency per cycle or pJ saved) against
    ratio-based matrix pruning at the same cycles or energy, and unstructured pruning at the same ratio, on the
    run's network and array.

    For each ratio of ``[experiments] ratios``, the ratio-based matrix point's cycles (the accelerator's exact
    cycle model of its kept shapes) and energy (the activity model of its kept tiles, priced by the energy table:
    ``prunehw.hw.models.cost.energy_cost``) are the cost-aware points' targets; unstructured pruning leaves every tile
    in place, so its cycles are the dense model's (zero-weight gating saves energy, not cycles)."""
    from prunehw.variants import cost_code

    rows = []
    dense = [(g.n_rows, g.n_cols) for g in _geometry(pts)]
    dense_cycles, dense_uj = pts.cycles(dense), pts.energy(dense) / 1e6
    for r in tqdm(pts.cfg.experiments.ratios, desc="budget_aware targets", unit="ratio", leave=False):
        m = pts.get("matrix", ratio=r, criterion="l1")
        target, target_pj = pts.cycles(m["kept_shapes"]), round(pts.energy(m["kept_shapes"]), 3)
        # (named with the cost functions' digest: a changed cost prunes them again)
        c = pts.get("matrix_cost", target=target, criterion="l1", cost_code=cost_code())
        e = pts.get("matrix_energy", target_pj=target_pj, criterion="l1", cost_code=cost_code())
        u = pts.get("unstructured", schedule="iterative", ratio=r, scope="all")
        rows.append({"ratio": r, "target_cycles": target, "target_energy_uj": target_pj / 1e6,
                     "dense_cycles": dense_cycles, "dense_energy_uj": dense_uj,
                     "ratio_matrix_cycles": target, "ratio_matrix_energy_uj": target_pj / 1e6,
                     "ratio_matrix_accuracy": m["accuracy"], "ratio_matrix_weights_kept": m["weights_kept"],
                     "cost_matrix_cycles": pts.cycles(c["kept_shapes"]), "cost_matrix_accuracy": c["accuracy"],
                     "cost_matrix_weights_kept": c["weights_kept"], "cost_matrix_kept_shapes": json.dumps(c["kept_shapes"]),
                     "energy_matrix_energy_uj": pts.energy(e["kept_shapes"]) / 1e6,
                     "energy_matrix_cycles": pts.cycles(e["kept_shapes"]), "energy_matrix_accuracy": e["accuracy"],
                     "energy_matrix_kept_shapes": json.dumps(e["kept_shapes"]),
                     "ratio_matrix_kept_shapes": json.dumps(m["kept_shapes"]),
                     "unstructured_cycles": dense_cycles, "unstructured_accuracy": u["accuracy"]})
    d = pts.dir
    acc = lambda key: [100 * r[key] for r in rows]  # noqa: E731
    by_cycles = {"matrix, to a cycle target (cost-aware)": ([r["cost_matrix_cycles"] for r in rows],
                                                            acc("cost_matrix_accuracy")),
                 "matrix, to a weight ratio": ([r["ratio_matrix_cycles"] for r in rows], acc("ratio_matrix_accuracy")),
                 "unstructured (same ratios; cycles stay dense)": ([r["unstructured_cycles"] for r in rows],
                                                                   acc("unstructured_accuracy"))}
    by_energy = {"matrix, to an energy target (cost-aware)": ([r["energy_matrix_energy_uj"] for r in rows],
                                                              acc("energy_matrix_accuracy")),
                 "matrix, to a weight ratio": ([r["ratio_matrix_energy_uj"] for r in rows], acc("ratio_matrix_accuracy"))}
    where = f"{pts.cfg.array.rows}x{pts.cfg.array.cols} array"
    return [write_csv(d / "budget_aware.csv", rows),
            _plot(d / "budget_aware.png", f"Accuracy vs cycles per image ({where})",
                  "cycles per image (analytic = RTL counters)", "test accuracy (%)", by_cycles,
                  baseline=("dense", 100 * _dense_acc(pts))),
            _plot(d / "budget_aware_energy.png", f"Accuracy vs energy per inference ({where})",
                  "uJ per inference (activity model x energy table)", "test accuracy (%)", by_energy,
                  baseline=("dense", 100 * _dense_acc(pts)))]


def _geometry(pts):
    from prunehw.model.matrix_form import geometry

    return geometry(pts.dense())


#: The experiments by name, in the order they run (``claims`` last: it reads the points the figures measured).
FIGURES = {"fig11": _fig11, "fig12": _fig12, "fig13": _fig13, "fig14_20": _fig14_20, "fig18_19": _fig18_19,
           "criteria": _criteria, "budget": _budget, "bits": _bits, "budget_aware": _budget_aware, "claims": claims_table}
EXPERIMENTS = tuple(FIGURES)
