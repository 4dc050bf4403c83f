"""The terminal report that ends ``prunehw run`` (``make sim``): what was measured, per variant."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from prunehw.core.artifacts import read_json
from prunehw.core.layout import RunLayout

__all__ = ["format_report", "savings_ratios", "write_savings"]


def _pct(v) -> str:
    return f"{100 * v:.2f}%" if isinstance(v, (int, float)) else "-"


def _count(d: dict | None) -> str:
    return f"{d['match']}/{d['total']}" if d else "-"


def format_report(run_dir: Path) -> str:
    s = read_json(RunLayout(run_dir).summary)
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
    for name, v in variants.items():
        per = v.get("cycles", {}).get("per_layer", [])
        if any("scalesim" in p for p in per):
            lines.append(f"  {name} cycles per layer, RTL / analytic / SCALE-Sim: " + ", ".join(
                f"{p['layer']} {p.get('rtl', '-')}/{p['analytic']}/{p.get('scalesim', '-')}" for p in per))
    for name, v in variants.items():
        if "target_cycles" in v:     # pruned to a cycle target: asked, predicted, measured
            t, cyc = v["target_cycles"], v.get("cycles", {})
            rtl = cyc.get("rtl")
            lines.append(f"  {name}: target {t} cycles per image; analytic {cyc.get('analytic', '-')}, RTL "
                         f"{rtl if rtl is not None else 'not simulated'}"
                         + (f": {'met' if rtl <= t else 'NOT met'}" if rtl is not None else ""))
        if "target_images_per_s" in v:   # pruned to a rate: at the clock it was built for, and at the routed Fmax
            t, rtl, clock = v["target_images_per_s"], v.get("cycles", {}).get("rtl"), v.get("target_clock_mhz")
            fmax = v.get("synth", {}).get("fmax_mhz")
            at = [f"{clock * 1e6 / rtl:,.0f} images/s at {clock:g} MHz: {'met' if clock * 1e6 / rtl >= t else 'NOT met'}"
                  ] if rtl and clock else ["RTL not simulated"]
            if rtl and fmax:
                at.append(f"{fmax * 1e6 / rtl:,.0f} at the routed Fmax {fmax:g} MHz")
            lines.append(f"  {name}: target {t:,.0f} images/s ({v.get('target_cycles_for_rate', '-')} cycles per image "
                         f"at {clock:g} MHz); RTL {rtl if rtl else '-'} cycles, " + ", ".join(at))
        if "target_energy_uj" in v:  # pruned to an energy target: asked, and the RTL counters' energy
            t, e = v["target_energy_uj"], v.get("energy_pj", {}).get("total")
            lines.append(f"  {name}: target {t:g} uJ per inference; from the RTL counters "
                         + (f"{e / 1e6:.3f} uJ: {'met' if e <= t * 1e6 else 'NOT met'}" if e is not None
                            else "not simulated"))
    dense = variants.get("dense", {}).get("cycles", {}).get("rtl")
    for name, v in variants.items():
        c = v.get("cycles", {}).get("rtl")
        if dense and c and name != "dense":
            lines.append(f"  {name}: {dense / c:.2f}x fewer cycles than dense on the same array "
                         f"(PE utilisation {_pct(v.get('pe_utilization'))})")
    for name, r in s.get("savings_vs_dense", {}).items():
        parts = ", ".join(f"{k} {x:.2f}x" for k, x in sorted(r.items()))
        if parts:
            lines.append(f"  {name} vs dense, times smaller (measured): {parts}")
    for name, v in variants.items():
        e = v.get("energy_pj")
        if e:
            lines.append(f"  {name}: {e['total'] / 1e6:.3f} uJ per inference ("
                         + ", ".join(f"{k} {x / 1e6:.3f}" for k, x in e.items() if k != "total") + f") [{v.get('energy_table', '')[:40]}...]")
        saved, dense_e = v.get("energy_gating_saved_pj"), variants.get("dense", {}).get("energy_pj", {}).get("total")
        if saved is not None and e:
            lines.append(f"  {name}: zero-weight gating saved {saved / 1e6:.3f} uJ of multiplier energy per inference"
                         + (f" ({saved / dense_e:.1%} of dense's total)" if dense_e else ""))
    for name, v in variants.items():
        for tag, d in v.get("bitexact", {}).items():
            if d.get("first_mismatch"):
                lines.append(f"  MISMATCH {name} {tag}: {d['first_mismatch']}")
    from prunehw.synth_report import format_board_table, format_device_table, format_synth_table

    for table in (format_synth_table(s), format_device_table(s), format_board_table(s)):
        if table:
            lines += ["", table]
    lines += ["", f"files: {run_dir}/summary.json, manifest.json; per variant: model.keras, contract.json, weights.npz, "
              f"hls/ (hls4ml project), rtl/ (Verilog, accelerator.json), sim_<simulator>/, synth/ (tool logs, synth.json)"]
    return "\n".join(lines)


def _ratio(a, b):
    return a / b if a and b else None


def savings_ratios(summary: dict, base: str = "dense") -> dict[str, dict[str, float]]:
    """{variant: {cycles, storage_<kind>, energy}} as base / variant (how many times smaller), from measured figures."""
    variants = summary.get("variants", {})
    ref = variants.get(base, {})
    out = {}
    for name, v in variants.items():
        if name == base:
            continue
        r = {}
        c = _ratio(ref.get("cycles", {}).get("rtl"), v.get("cycles", {}).get("rtl"))
        if c:
            r["cycles"] = c
        e = _ratio(ref.get("energy_pj", {}).get("total"), v.get("energy_pj", {}).get("total"))
        if e:
            r["energy"] = e
        for kind, size in v.get("storage_bytes", {}).items():
            # against the dense float model's file of the same kind; CSR/packed against the dense Keras file; the
            # weight ROMs against the dense model's float32 weights
            same = kind if kind in ("keras", "savedmodel", "gzip", "weights_float32") else "keras"
            ref_size = ref.get("storage_bytes", {}).get("weights_float32" if kind == "packed_weights" else same)
            s = _ratio(ref_size, size)
            if s:
                r[f"storage_{kind}"] = s
        out[name] = r
    return out


def write_savings(run_dir: Path) -> list[Path]:
    """savings.csv and PNGs (cycles per layer, energy breakdown, storage, accuracy) from summary.json."""
    from prunehw.core.artifacts import pyplot, update_summary, write_csv, write_png

    plt = pyplot()

    run_dir = Path(run_dir)
    s = read_json(RunLayout(run_dir).summary)
    variants = s.get("variants", {})
    ratios = savings_ratios(s)
    update_summary(run_dir, {"savings_vs_dense": ratios})
    rows = []
    for name, v in variants.items():
        row = {"variant": name, "ratio_measured": v.get("ratio_measured"), "weights_kept": v.get("weights_kept"),
               "cycles_rtl": v.get("cycles", {}).get("rtl"), "cycles_analytic": v.get("cycles", {}).get("analytic"),
               "pe_utilization": v.get("pe_utilization"), "energy_pj": v.get("energy_pj", {}).get("total")}
        row.update({f"bytes_{k}": b for k, b in v.get("storage_bytes", {}).items()})
        row.update({f"x_fewer_{k}": round(x, 3) for k, x in ratios.get(name, {}).items()})
        rows.append(row)
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k != "variant", k))
    out_dir = run_dir / "savings"
    out = []
    out.append(write_csv(out_dir / "savings.csv", rows, keys))

    def grouped_bars(groups: list[str], series: dict[str, list[float]], title: str, xlabel: str, ylabel: str):
        """One bar per series inside each group; returns the axes for final touches."""
        fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
        width = 0.8 / len(series)
        for i, (label, values) in enumerate(series.items()):
            ax.bar(np.arange(len(groups)) + i * width, values, width, label=label)
        ax.set_xticks(np.arange(len(groups)) + width * (len(series) - 1) / 2, groups)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
        return fig, ax

    def save(fig, name):
        out.append(write_png(fig, out_dir / name))

    names = [n for n in variants if variants[n].get("cycles", {}).get("per_layer")]
    if names:
        layers = [p["layer"] for p in variants[names[0]]["cycles"]["per_layer"]]
        per = {n: {p["layer"]: p.get("rtl", p["analytic"]) for p in variants[n]["cycles"]["per_layer"]} for n in names}
        fig, _ = grouped_bars(layers, {n: [per[n].get(l, 0) for l in layers] for n in names},
                              "Cycles per layer (RTL counters where simulated, else analytic), per image", "layer", "cycles")
        save(fig, "cycles_per_layer.png")
    names = [n for n in variants if "energy_pj" in variants[n]]
    if names:
        parts = [k for k in variants[names[0]]["energy_pj"] if k != "total"]
        fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
        bottom = np.zeros(len(names))
        for part in parts:
            vals = np.array([variants[n]["energy_pj"][part] / 1e6 for n in names])
            ax.bar(names, vals, bottom=bottom, label=part)
            bottom += vals
        ax.set_title("Energy per inference by component (RTL activity x Horowitz 45 nm)")
        ax.set_xlabel("variant")
        ax.set_ylabel("energy (uJ)")
        ax.legend(fontsize=7)
        save(fig, "energy_breakdown.png")
    names = [n for n in variants if "storage_bytes" in variants[n]]
    if names:
        kinds = sorted({k for n in names for k in variants[n]["storage_bytes"]})
        fig, ax = grouped_bars(kinds, {n: [variants[n]["storage_bytes"].get(k, 0) for k in kinds] for n in names},
                               "Storage per variant", "format", "bytes (log scale)")
        ax.set_yscale("log")
        save(fig, "storage.png")
    names = [n for n in variants if variants[n].get("accuracy")]
    if names:
        stages = ["float", "quant", "hls", "rtl_verilator"]
        groups = [f"{n}\n({100 * (variants[n].get('ratio_measured') or 0):.0f}% removed)" for n in names]
        fig, ax = grouped_bars(groups, {st: [100 * (variants[n]["accuracy"].get(st) or 0) for n in names] for st in stages},
                               "Test accuracy per variant and stage (images counted in summary.json)",
                               "variant (pruning ratio)", "accuracy (%)")
        lo = min(100 * v for n in names for st in stages if (v := variants[n]["accuracy"].get(st)))
        ax.set_ylim(max(0, lo - 2), 100)
        save(fig, "accuracy.png")
    return out
