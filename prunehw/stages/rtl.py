"""The ``rtl`` stage: the accelerator's Verilog for a variant (``<variant>/rtl/``), its analytic cycles and
SCALE-Sim's estimate for the same matrix products. The Verilog is built for the run's device (``[synth]
device``): on a part with fewer multipliers than the array has PEs, the rest multiply in the fabric; on an iCE40
UltraPlus, its flavour on the largest array the part holds (a variant it holds on none is refused in one line).
That is the Verilog every later stage simulates and synthesises."""

from __future__ import annotations

from pathlib import Path

from prunehw.core.artifacts import code_digest, record_stage, sha256_file, stage_key, update_variant
from prunehw.stages import code_key, up_to_date

__all__ = ["rtl", "merge_layers"]


def rtl(flow, variant: str, force: bool = False) -> Path:
    """Generate the accelerator's Verilog for a variant (``<variant>/rtl/``) and its analytic cycles."""
    from prunehw.export.contract import load_contract
    from prunehw.hw.generate import generate_verilog
    from prunehw.hw.models.scalesim_compare import scalesim_cycles
    from prunehw.hw.target.devices import device
    from prunehw.hw.target.ecp5 import multipliers

    cfg = flow.cfg
    contract_path = flow.quantize(variant)
    out = flow.layout.rtl(variant)
    # (all of hw/ beside the imported code: its data files, such as the primitives' simulation models; the device
    # only where it changes the Verilog, a part short of multipliers)
    ecp5 = device(cfg.synth.device).family == "ecp5"
    split = multipliers(cfg.array.rows * cfg.array.cols, cfg.synth.device) if ecp5 else {"lut": 0}
    key = stage_key(cfg.key("array"), sha256_file(contract_path), sha256_file(contract_path.with_name("weights.npz")),
                    code_digest("hw"), code_key(__name__), *([cfg.synth.device] if split["lut"] or not ecp5 else []))
    stage = f"rtl:{variant}"
    if up_to_date(flow, stage, key, out, force):
        return out
    before = sha256_file(out / "prunehw_top.v") if (out / "prunehw_top.v").is_file() else None
    v, j, desc = generate_verilog(load_contract(contract_path), cfg.array, out, device=cfg.synth.device)
    cyc = desc["cycles_analytic"]
    # SCALE-Sim's estimate for the same matrix products on the same array (pooling is not a GEMM)
    gemms = [(o["name"], o["positions"], o["rows"], o["cols"]) for o in desc["ops"] if "positions" in o]
    rows, cols = desc["array"]["rows"], desc["array"]["cols"]      # (an iCE40's may be smaller than [array]'s)
    ss = scalesim_cycles(gemms, rows, cols, out / "scalesim", cfg.array.dataflow)
    update_variant(flow.run_dir, variant, {
        "cycles": {"analytic": cyc["total"], "scalesim": sum(ss.values()),
                   "analytic_matmul_layers": sum(cyc["per_op"][n] for n in ss),
                   "per_layer": merge_layers(flow, variant, [
                       {"layer": k, "analytic": c, **({"scalesim": ss[k]} if k in ss else {})}
                       for k, c in cyc["per_op"].items()])},
        "array": desc["array"],
    }, replace=() if sha256_file(v) == before else MEASURED_ON_VERILOG)
    record_stage(flow.run_dir, stage, key, [v, j, *(out / m for m in desc["sim_models"])])
    lut = f" ({split['lut']} of its multipliers in LUTs: the {cfg.synth.device} has {split['dsp']})" if split["lut"] else ""
    lut += "" if ecp5 else f" (the largest the {cfg.synth.device} holds)"
    flow.log(f"rtl {variant}: {rows}x{cols} array{lut}, {cyc['total']} cycles per image "
             f"(analytic), {cyc['macs']} MACs; SCALE-Sim estimates {sum(ss.values())} cycles for its conv/dense "
             f"layers (ours {sum(cyc['per_op'][n] for n in ss)}); wrote {v}")
    return out


#: the figures measured on a variant's Verilog (synthesis, the device table, the board): a new Verilog drops them
#: from summary.json until they are measured on it (``prunehw synth``, ``prunehw board``)
MEASURED_ON_VERILOG = ("synth", "devices", "smallest_device", "board")


def merge_layers(flow, variant: str, new: list[dict]) -> list[dict]:
    """Per-layer cycle entries with ``new`` figures laid over those already in summary.json (same layers)."""
    from prunehw.core.artifacts import read_json

    old = read_json(flow.layout.summary).get("variants", {}).get(variant, {})
    before = {p["layer"]: p for p in old.get("cycles", {}).get("per_layer", [])}
    return [{**before.get(p["layer"], {}), **p} for p in new]
