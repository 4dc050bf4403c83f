"""The ``quantize`` stage: a variant's numeric contract (``contract.json`` + ``weights.npz``), by post-training
quantization or quantization-aware fine-tuning, with per-layer widths searched when ``weight_bits = "auto"``,
and the golden integer model's test accuracy."""

from __future__ import annotations

from pathlib import Path

from prunehw.core.artifacts import record_stage, sha256_file, stage_key, update_variant
from prunehw.stages import HARDWARE, code_key, up_to_date

__all__ = ["quantize", "write_contract"]


def quantize(flow, variant: str, force: bool = False) -> Path:
    """Quantize a variant to the numeric contract; writes ``contract.json`` + ``weights.npz`` and golden accuracy."""
    from prunehw.export.contract import load_contract
    from prunehw.model.network import load_model
    from prunehw.variants import calibration_images

    cfg = flow.cfg
    src = flow.float_model(variant)
    out = flow.layout.contract(variant)
    q = cfg.quant
    v = cfg.variant(variant)
    wb, ab = v.weight_bits or q.weight_bits, v.act_bits or q.act_bits
    qat = v.quant == "qat"
    # the rows a matrix-pruned model dropped: a chain's index maps, or the channel groups of a graph's pruning
    maps = next((p for p in (src.with_name("index_maps.json"), src.with_name("channel_groups.json")) if p.is_file()),
                None)
    # only what the contract depends on: not how many processes or images the hls4ml check uses
    contract_keys = {"weight_bits": wb, "act_bits": ab, "calibration_images": q.calibration_images}
    if qat:
        contract_keys.update(qat_epochs=v.qat_epochs, qat_learning_rate=v.qat_learning_rate,
                             batch_size=cfg.prune.batch_size)
    if wb == "auto":        # (judged against the dense float model on the array's tiles)
        contract_keys.update(max_loss=v.max_loss, array=cfg.key("array"), dense=sha256_file(flow.train()))
    key = stage_key(cfg.key("data"), contract_keys, sha256_file(src), maps is not None and sha256_file(maps),
                    code_key(__name__, apart=HARDWARE))
    stage = f"quantize:{variant}"
    if up_to_date(flow, stage, key, out, force):
        return out
    data = flow.data
    model = load_model(src)
    outputs = []
    if wb == "auto":
        wb = _allocate(flow, variant, v, model, maps, outputs)
    if qat:
        from prunehw.export.qat import qat_finetune
        from prunehw.model.network import save_model, set_seed

        set_seed(cfg.seed)
        history = qat_finetune(model, data.x_train, data.y_train, calibration_images(data, cfg), wb, ab,
                               v.qat_epochs, cfg.prune.batch_size, v.qat_learning_rate, cfg.seed,
                               desc=f"QAT {variant}")
        outputs.append(save_model(model, out.with_name("model_qat.keras")))
        flow.log(f"quantize {variant}: quantization-aware fine-tuning, {v.qat_epochs} epochs at {wb}-bit weights "
                 f"and {ab}-bit activations, loss {history[0]['loss']:.4f} -> {history[-1]['loss']:.4f}")
    npz, acc = write_contract(model, data, cfg, maps, flow.train(), (wb, ab), out)
    contract = load_contract(out)
    widths = {l["name"]: {"weight": l["weight"]["bits"], "act": l["output"]["bits"]} for l in contract.weighted()}
    update_variant(flow.run_dir, variant, {"accuracy": {"quant": acc, "images": {"quant": int(len(data.y_test))}},
                                           "quant": "qat" if qat else "ptq",
                                           "weight_bits": max(wb.values()) if isinstance(wb, dict) else wb,
                                           "act_bits": ab, "bits": widths}, replace=("quant",))
    record_stage(flow.run_dir, stage, key, [out, npz, *outputs])
    wdesc = "/".join(map(str, wb.values())) if isinstance(wb, dict) else wb     # (per layer: 8/5/4/6)
    flow.log(f"quantize {variant}: golden integer model test accuracy {acc:.4f} ({wdesc}-bit weights, "
             f"{ab}-bit activations, {'QAT' if qat else 'PTQ'}); wrote {out}")
    return out


def write_contract(model, data, cfg, maps: Path | None, dense: Path, bits: tuple, out: Path) -> tuple[Path, float]:
    """What the stage does after fine-tuning, without its cache and records, and what a sweep's task does too:
    ``model`` quantized at ``bits`` (weight, activation) to the contract ``out`` (and its ``weights.npz``);
    returns (the weights' path, the golden integer model's test accuracy)."""
    from prunehw.export.contract import load_contract, save_contract
    from prunehw.export.golden import golden_accuracy
    from prunehw.variants import quantize_variant

    spec, w, b = quantize_variant(model, data, cfg, maps, dense, bits)
    _, npz = save_contract(out, spec, w, b)
    return npz, golden_accuracy(load_contract(out), data.x_test, data.y_test)


def _allocate(flow, variant: str, v, model, maps, outputs: list) -> dict[str, int]:
    """``weight_bits = "auto"``: each layer's width, searched on the validation images against the dense float
    model's validation accuracy (``prunehw.variants.allocate_bits``); the result under ``bit_allocation``."""
    from prunehw.model.network import load_model
    from prunehw.model.train import evaluate
    from prunehw.variants import allocate_bits

    reference = evaluate(load_model(flow.train()), flow.data.x_val, flow.data.y_val)
    bits, paths, said = allocate_bits(model, flow.data, flow.cfg, v, reference, maps, flow.train(), flow.run_dir)
    outputs += paths
    flow.log(f"quantize {variant}: {said}")
    return bits
