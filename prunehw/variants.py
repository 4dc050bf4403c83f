"""What makes a variant from a trained model, shared by the flow's stages and the sweep's tasks: pruning with the
run's budget, the calibration images, and quantization to the numeric contract at the variant's widths."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from prunehw.core.config import RunConfig, VariantConfig

__all__ = ["allocate_bits", "calibration_images", "copy_pruned", "cost_code", "cycle_cost", "cycles_for_rate",
           "energy_cost", "prune_variant", "quantize_variant", "rows_kept"]


def prune_variant(model, data, cfg: RunConfig, variant: VariantConfig, out_dir: Path):
    """Prune ``model`` (in place, or a smaller copy for matrix pruning) as ``variant`` says, with ``cfg.prune``'s budget.

    Returns the pruned model and, for matrix pruning, the index maps (a graph's: its channel groups) written to
    ``out_dir``. A dense variant removes nothing: the model comes back as it is.
    """
    if variant.method == "dense":
        return model, None
    from prunehw.model.network import set_seed
    from prunehw.model.prune import prune_unstructured
    from prunehw.model.pruning_schedule import PruningSchedule

    p = cfg.prune
    set_seed(cfg.seed)
    # (to a cycle target, the schedule gives each step's share of the way there: its ratio over the final one)
    schedule = PruningSchedule(variant.schedule, variant.ratio if variant.ratio is not None else 0.5, p.steps,
                               p.finetune_epochs)
    if variant.method == "unstructured":
        prune_unstructured(model, data, schedule, scope=p.scope, layer_ratios=p.layer_ratios,
                           learning_rate=p.learning_rate, batch_size=p.batch_size, norm=variant.criterion,
                           desc=variant.name)
        return model, None
    from prunehw.model.matrix_form import save_maps
    from prunehw.model.matrix_prune import prune_matrix

    # matrix-based: prune, then write the index maps beside the model
    to_cost = {}
    check_prunable(model, [variant], "the model")
    if variant.target is not None:   # pruned to cycles (per image) or energy (pJ per inference, given in uJ)
        kind, value = variant.target
        if kind == "target_energy_uj":
            to_cost = {"cost": energy_cost(model, data, cfg), "target": value * 1e6}
        else:                        # (images/s at the clock the design is built for: a cycle target)
            cycles = value if kind == "target_cycles" else cycles_for_rate(value, cfg)
            to_cost = {"cost": cycle_cost(model, data, cfg), "target": cycles}
    from prunehw.model.graph import keras_graph

    if not keras_graph(model).is_chain:     # (a residual network: its channels go in dependency groups)
        from prunehw.core.artifacts import write_json
        from prunehw.model.channel_groups import prune_groups

        small, record = prune_groups(model, data, schedule, criterion=variant.criterion,
                                     array=cfg.array if variant.tile_aware else None, learning_rate=p.learning_rate,
                                     batch_size=p.batch_size, desc=variant.name)
        return small, write_json(out_dir / "channel_groups.json", record)
    small, geo, maps = prune_matrix(
        model, data, schedule, criterion=variant.criterion, array=cfg.array if variant.tile_aware else None,
        learning_rate=p.learning_rate, batch_size=p.batch_size, calibration=p.calibration_images,
        seed=cfg.seed, desc=variant.name, **to_cost)
    return small, save_maps(out_dir / "index_maps.json", geo, maps)


def check_prunable(model, variants, where: str) -> None:
    """Refuse, in one line naming the variant and the layer, a variant that ``model``'s graph does not allow yet:
    matrix pruning of a model with merges (a residual Add) to a hardware
    target or by a gradient criterion (its channels go in dependency groups, ``model/channel_groups.py``, scored by
    their columns' norms), matrix pruning to a hardware target of a model with depthwise convolutions (the cost
    functions recount a convolution's tiles, not a grouped layer's)."""
    from prunehw.core.errors import ConfigError
    from prunehw.model.graph import keras_graph

    graph = keras_graph(model, where)
    merge = next((n for n in graph if len(n.inputs) > 1), None)
    depthwise = next((n for n in graph if n.kind == "DepthwiseConv2D"), None)
    for v in variants:
        if merge is not None and v.method == "matrix" and (v.target is not None or v.criterion not in ("l1", "l2")):
            raise ConfigError(f"variant {v.name!r}: {where} has {merge.kind} {merge.name!r} (a merge); matrix pruning "
                              f"removes its channels in dependency groups, to a ratio, scored by the l1 or l2 norm; "
                              f"allowed for this model: ratio = ..., criterion = \"l1\" or \"l2\"")
        if depthwise is not None and v.method == "matrix" and v.target is not None:
            raise ConfigError(f"variant {v.name!r}: {where} has DepthwiseConv2D {depthwise.name!r}; matrix pruning to "
                              f"a hardware target ({v.target[0]}) does not cost depthwise convolutions yet; allowed "
                              f"there: a ratio")


def cost_code() -> str:
    """A digest of what pruning to a hardware target depends on beyond the pruning code: the cost functions here
    and the hardware models they call (in the cache keys of such prunings)."""
    from prunehw.core.artifacts import code_digest, sha256_file, stage_key

    return stage_key(sha256_file(Path(__file__)), code_digest("hw"))


def cycles_for_rate(images_per_s: float, cfg: RunConfig) -> int:
    """The most cycles per image that reach ``images_per_s`` at the clock the design is built for
    (``[synth] target_mhz``, which synthesis checks it closes)."""
    return math.floor(cfg.synth.target_mhz * 1e6 / images_per_s)


def cycle_cost(model, data, cfg: RunConfig):
    """Cycles per image on ``cfg.array`` of ``model`` pruned to given (kept rows, kept columns) per weighted layer:
    the hardware's cost model (``hw.models.cost.cycle_cost``) on the unpruned model's program."""
    from prunehw.hw.models.cost import cycle_cost as on_program

    return on_program(_program(model, data, cfg))


def energy_cost(model, data, cfg: RunConfig):
    """pJ per inference on ``cfg.array`` of ``model`` pruned to given (kept rows, kept columns) per layer: the
    hardware's energy estimate (``hw.models.cost.energy_cost``) on the unpruned model's program and design, priced
    by the default energy table."""
    from prunehw.hw.generate import describe
    from prunehw.hw.models.cost import energy_cost as on_program
    from prunehw.hw.models.energy import load_energy_table

    program = _program(model, data, cfg)
    return on_program(program, describe(program), load_energy_table())


def _program(model, data, cfg: RunConfig):
    """The unpruned ``model``'s program on ``cfg.array`` (quantized on a few training images: only its shapes and
    zero weights matter to the costs)."""
    from prunehw.export.contract import Contract
    from prunehw.export.quantize import quantize
    from prunehw.hw.generate import program_for

    return program_for(Contract(*quantize(model, data.x_train[:32])), cfg.array)


def copy_pruned(run_dir: Path, base: str, name: str) -> list[Path]:
    """Copy variant ``base``'s pruned model (and index maps or channel groups) to variant ``name`` with its summary's
    pruning figures (``pruned_as`` says whose); returns the files written, the model first."""
    import shutil

    from prunehw.core.artifacts import read_json, update_variant
    from prunehw.core.layout import RunLayout

    layout = RunLayout(run_dir)
    layout.variant(name).mkdir(parents=True, exist_ok=True)
    outputs = [Path(shutil.copyfile(path(base), path(name)))
               for path in (layout.model, layout.index_maps, layout.channel_groups) if path(base).is_file()]
    entry = read_json(layout.summary).get("variants", {}).get(base, {})
    keep = ("method", "schedule", "criterion", "ratio_requested", "target_cycles", "target_energy_uj",
            "target_images_per_s", "target_cycles_for_rate", "ratio_measured", "weights_total",
            "weights_kept")
    acc = entry.get("accuracy", {})
    update_variant(run_dir, name, {**{k: entry[k] for k in keep if k in entry}, "pruned_as": base,
                                   "accuracy": {"float": acc.get("float"),
                                                "images": {"float": acc.get("images", {}).get("float")}}})
    return outputs


def calibration_images(data, cfg: RunConfig) -> np.ndarray:
    """The ``cfg.quant.calibration_images`` training images (chosen by the run's seed) that set activation formats."""
    rng = np.random.default_rng(cfg.seed)
    n = min(cfg.quant.calibration_images, len(data.x_train))
    return data.x_train[np.sort(rng.choice(len(data.x_train), size=n, replace=False))]


def quantize_variant(model, data, cfg: RunConfig, maps_path: Path | None = None, dense_path: Path | None = None,
                     bits: tuple[int, int] | None = None):
    """The numeric contract (spec, weights, biases) of a float ``model``, calibrated on ``cfg.quant`` training images,
    at ``bits`` (weight, activation; default ``cfg.quant``'s).

    ``maps_path`` and ``dense_path``: the index maps of a matrix-pruned model (or the channel groups of one pruned
    by groups) and the unpruned model they refer to, so rows it dropped are recorded as absent (the unpruned model
    is only loaded for index maps).
    """
    from prunehw.export.quantize import quantize

    q = cfg.quant
    wb, ab = bits or (q.weight_bits, q.act_bits)
    return quantize(model, calibration_images(data, cfg), wb, ab, rows_kept(maps_path, dense_path))


def rows_kept(maps_path: Path | None, dense_path: Path | None) -> dict[str, list[int]] | None:
    """The rows of each layer's matrix a matrix-pruned model kept (from its index maps, or for a network pruned by
    channel groups from ``channel_groups.json``, where only the layers whose rows were rounded to whole tiles are
    named), None for another model."""
    if maps_path is None:
        return None
    if maps_path.name == "channel_groups.json":
        from prunehw.core.artifacts import read_json

        return read_json(maps_path).get("rows_kept") or None
    from prunehw.model.matrix_form import geometry, kept_small_rows, load_maps
    from prunehw.model.network import load_model

    return kept_small_rows(geometry(load_model(dense_path)), load_maps(maps_path))


def allocate_bits(model, data, cfg: RunConfig, variant: VariantConfig, reference: float, maps_path: Path | None,
                  dense_path: Path | None, run_dir: Path):
    """Per-layer weight widths of ``model`` for ``weight_bits = "auto"`` (:mod:`prunehw.export.bit_allocation`),
    judged on the validation images against ``reference`` (the dense float model's validation accuracy).

    Returns the widths ({layer: bits}), the files written to the variant's folder (every trial in
    ``bit_allocation.csv``; ``bit_allocation.png``: accuracy against packed size, the budget line) and a line
    saying what was found; the result goes to the variant's summary under ``bit_allocation``.
    """
    from tqdm.auto import tqdm

    from prunehw.core.artifacts import pyplot, update_variant, write_csv, write_png
    from prunehw.export.bit_allocation import allocate_weight_bits

    ab = variant.act_bits or cfg.quant.act_bits
    with tqdm(desc=f"bit allocation {variant.name}", unit="trial", leave=False) as bar:
        alloc = allocate_weight_bits(model, calibration_images(data, cfg), data.x_val, data.y_val, act_bits=ab,
                                     reference=reference, max_loss=variant.max_loss, rows=cfg.array.rows,
                                     cols=cfg.array.cols, rows_kept=rows_kept(maps_path, dense_path),
                                     progress=lambda row: bar.update(1))
    folder = Path(run_dir) / variant.name
    paths = [write_csv(folder / "bit_allocation.csv", alloc.trials)]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.scatter([t["packed_bits"] / 8192 for t in alloc.trials], [100 * t["accuracy"] for t in alloc.trials], s=12,
               c=["tab:blue" if t["within"] else "tab:gray" for t in alloc.trials], label="trials (grey: over budget)")
    ax.axhline(100 * reference - variant.max_loss, color="tab:red", lw=1,
               label=f"budget: dense float - {variant.max_loss} points")
    ax.scatter([alloc.packed_bits / 8192], [100 * alloc.accuracy], marker="*", s=120, color="tab:green", label="chosen")
    ax.set(title=f"Bit allocation search, {variant.name} (validation images)", xlabel="packed weight ROMs (KiB)",
           ylabel="integer model accuracy (%)")
    ax.legend(fontsize=7)
    paths.append(write_png(fig, folder / "bit_allocation.png"))
    update_variant(run_dir, variant.name, {"bit_allocation": {
        "weight_bits": alloc.bits, "packed_weight_bytes": -(-alloc.packed_bits // 8), "val_accuracy": alloc.accuracy,
        "val_reference_float": reference, "max_loss_points": variant.max_loss, "met": alloc.met,
        "trials": len(alloc.trials), "images": int(len(data.y_val))}}, replace=("bit_allocation",))
    said = (f"bit allocation {' / '.join(f'{n} {b}' for n, b in alloc.bits.items())}-bit in {len(alloc.trials)} trials: "
            f"{alloc.packed_bits / 8192:.1f} KiB of weight ROMs, validation accuracy {alloc.accuracy:.4f} against dense "
            f"float {reference:.4f} (budget {variant.max_loss} points{'' if alloc.met else ': NOT met even at 8 bits'})")
    return alloc.bits, paths, said
