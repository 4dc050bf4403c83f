"""The terminal report that ends ``prunehw run`` (``make sim``): what was measured, per variant."""

from __future__ import annotations

from pathlib import Path

from prunehw.artifacts import read_json

__all__ = ["format_report"]


def _pct(v) -> str:
    return f"{100 * v:.2f}%" if isinstance(v, (int, float)) else "-"


def _count(d: dict | None) -> str:
    return f"{d['match']}/{d['total']}" if d else "-"


def format_report(run_dir: Path) -> str:
    s = read_json(Path(run_dir) / "summary.json")
    variants = s.get("variants", {})
    lines = [f"prunehw report: {run_dir}", ""]
    head = f"{'variant':<18} {'removed':>8} {'weights':>8} {'float':>7} {'int8':>7} {'hls4ml':>7} {'RTL':>7} " \
           f"{'hls=gold':>10} {'verilator=gold':>15} {'icarus=gold':>12} {'cycles':>8} {'analytic':>9}"
    lines += [head, "-" * len(head)]
    for name, v in variants.items():
        acc, bx, cyc = v.get("accuracy", {}), v.get("bitexact", {}), v.get("cycles", {})
        rtl_acc = acc.get("rtl_verilator", acc.get("rtl_icarus"))
        lines.append(
            f"{name:<18} {_pct(v.get('ratio_measured')):>8} {v.get('weights_kept', '-'):>8} {_pct(acc.get('float')):>7} "
            f"{_pct(acc.get('quant')):>7} {_pct(acc.get('hls')):>7} {_pct(rtl_acc):>7} {_count(bx.get('hls')):>10} "
            f"{_count(bx.get('rtl_verilator')):>15} {_count(bx.get('rtl_icarus')):>12} {cyc.get('rtl', '-'):>8} "
            f"{cyc.get('analytic', '-'):>9}")
    dense = variants.get("dense", {}).get("cycles", {}).get("rtl")
    for name, v in variants.items():
        c = v.get("cycles", {}).get("rtl")
        if dense and c and name != "dense":
            lines.append(f"  {name}: {dense / c:.2f}x fewer cycles than dense on the same array "
                         f"(PE utilisation {_pct(v.get('pe_utilization'))})")
    for name, v in variants.items():
        for tag, d in v.get("bitexact", {}).items():
            if d.get("first_mismatch"):
                lines.append(f"  MISMATCH {name} {tag}: {d['first_mismatch']}")
    lines += ["", f"files: {run_dir}/summary.json, manifest.json; per variant: model.keras, contract.json, weights.npz, "
              f"hls/ (hls4ml project), rtl/ (Verilog, accelerator.json), sim_<simulator>/"]
    return "\n".join(lines)
