"""The synthesis stage of a run (``prunehw synth``, ``make synth-report``): every variant's accelerator through
yosys and nextpnr-ecp5, cached, then one table, a CSV and a PNG of resources and Fmax against dense.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prunehw.core.artifacts import read_json, record_stage, sha256_file, stage_is_current, update_variant, write_json
from prunehw.core.layout import RunLayout

__all__ = ["ToolMissing", "synth_variants", "synth_rows", "format_board_table", "format_synth_table", "write_synth_files"]

RESOURCES = ("lut", "ff", "carry", "dsp", "bram")
LABELS = {"lut": "LUT4", "ff": "FF", "carry": "CCU2C", "dsp": "DSP", "bram": "EBR"}


class ToolMissing(RuntimeError):
    """yosys or nextpnr-ecp5 is not installed; the message says which and how to get it."""


def _summary_entry(res: dict, desc: dict, sim_cycles: int | None) -> dict:
    """The ``synth`` entry of a variant in summary.json: measured figures plus images/s at the measured Fmax."""
    cycles = sim_cycles or desc["cycles_analytic"]["total"]
    entry = {k: res[k] for k in RESOURCES}
    entry.update(device=res["device"], tools=res["tools"], target_mhz=res["target_mhz"], fits=res["fits"],
                 capacity=res.get("capacity", {}), seconds=res.get("seconds", {}))
    if res.get("capacity"):
        entry["utilization"] = {k: round(res[k] / res["capacity"][k], 4) for k in RESOURCES if res["capacity"].get(k)}
    for k in ("fmax_mhz", "meets_timing", "critical_path", "problem"):
        if k in res:
            entry[k] = res[k]
    if "fmax_mhz" in res:
        entry["cycles_per_image"] = cycles
        entry["cycles_source"] = "rtl" if sim_cycles else "analytic"
        entry["images_per_s"] = round(res["fmax_mhz"] * 1e6 / cycles, 1)
    return entry


def synth_variants(flow, variants: list[str], force: bool = False) -> dict[str, dict]:
    """Synthesise and place-and-route each variant's ``prunehw_top`` (cached on the Verilog's hash and the tools').

    Runs ``cfg.synth.workers`` variants at once; returns {variant: summary entry}.
    """
    from prunehw.core.artifacts import code_closure, code_digest, stage_key
    from prunehw.hw.generate import TOP_NAME
    from prunehw.hw.target.devices import device, fit_problem
    from prunehw.hw.target.synth import SynthFailed, run_synthesis, tool_versions, tools_missing

    reason = tools_missing()
    if reason:
        raise ToolMissing(reason)
    cfg, run_dir, layout = flow.cfg.synth, flow.run_dir, flow.layout
    dev = device(cfg.device)
    versions = tool_versions()
    jobs, keys, results, refused = [], {}, {}, {}
    for v in variants:
        rtl_dir = flow.rtl(v)
        desc = read_json(layout.accelerator(v))
        # what the device lacks, said before any tool runs (no figures: none were measured)
        problem = fit_problem(dev, desc["memory_shapes"], desc["array"]["rows"] * desc["array"]["cols"])
        if problem:
            refused[v] = {"device": dev.name, "target_mhz": cfg.target_mhz, "fits": False, "problem": problem}
            continue
        keys[v] = stage_key(sha256_file(rtl_dir / f"{TOP_NAME}.v"), versions, cfg.target_mhz, cfg.seed, dev.name,
                            code_digest("hw"), code_closure(__name__))
        out = layout.synth(v) / "synth.json"
        if not force and stage_is_current(run_dir, f"synth:{v}", keys[v]):
            results[v] = read_json(out)
        else:
            jobs.append(v)

    status: dict[str, str] = {}
    lock = threading.Lock()
    bar = None
    if jobs:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="synth + place-and-route", unit="variant")

    def progress(v):
        def report(step, seconds):
            with lock:
                status[v] = f"{step} {seconds:.0f}s"
                bar.set_postfix_str("; ".join(f"{k}: {s}" for k, s in status.items()), refresh=True)
        return report

    def one(v):
        res = run_synthesis(layout.rtl(v) / f"{TOP_NAME}.v", TOP_NAME, layout.synth(v), cfg.target_mhz,
                            seed=cfg.seed, progress=progress(v), device=dev.name)
        with lock:
            status.pop(v, None)
            bar.update(1)
        return res

    errors = {}
    with ThreadPoolExecutor(max_workers=max(1, min(cfg.workers, len(jobs) or 1))) as pool:
        futures = {v: pool.submit(one, v) for v in jobs}
        for v, fut in futures.items():
            try:
                res = fut.result()
            except SynthFailed as exc:
                errors[v] = exc
                continue
            results[v] = res.to_dict()
            record_stage(run_dir, f"synth:{v}", keys[v], [layout.synth(v) / "synth.json"])
    if bar is not None:
        bar.close()
    entries = {}
    summary = read_json(layout.summary).get("variants", {})
    for v in variants:
        if v in refused:
            entries[v] = refused[v]
            write_json(layout.synth(v) / "synth.json", refused[v])   # (not an earlier device's figures)
            update_variant(run_dir, v, {"synth": entries[v]}, replace=("synth",))
            flow.log(f"synth {v}: {refused[v]['problem']} (nothing synthesised)")
            continue
        if v not in results:
            continue
        desc = read_json(layout.accelerator(v))
        entries[v] = _summary_entry(results[v], desc, summary.get(v, {}).get("cycles", {}).get("rtl"))
        update_variant(run_dir, v, {"synth": entries[v]}, replace=("synth",))
        flow.log(_line(v, entries[v], layout.synth(v), cached=v not in jobs))
    for v, exc in errors.items():
        flow.log(f"synth {v}: FAILED: {exc}")
    if errors:
        from prunehw.core.errors import PrunehwError

        raise PrunehwError(f"synth: {len(errors)} variant(s) failed ({', '.join(errors)}); the logs are named above")
    return entries


def _line(v: str, e: dict, folder: Path, cached: bool = False) -> str:
    head = (f"synth {v}: {'up to date, ' if cached else ''}{e['lut']} LUT4, {e['ff']} FF, {e['carry']} CCU2C, {e['dsp']} DSP, {e['bram']} EBR on the "
            f"{e['device']}")
    if "fmax_mhz" in e:
        head += f", Fmax {e['fmax_mhz']:.1f} MHz ({e['images_per_s']:.0f} images/s)"
    if e.get("problem"):
        head += f"; {e['problem']}"
    return head + f"; logs in {folder}"


def synth_rows(summary: dict) -> list[dict]:
    """One row per synthesised variant with its figures and each figure's ratio against dense."""
    variants = summary.get("variants", {})
    ref = variants.get("dense", {}).get("synth")
    rows = []
    for name, v in variants.items():
        e = v.get("synth")
        if not e or "lut" not in e:    # (refused before synthesis: its problem is listed under the table)
            continue
        row = {"variant": name, **{k: e[k] for k in RESOURCES}}
        row.update({f"{k}_pct": round(100 * e["utilization"][k], 2) for k in RESOURCES if k in e.get("utilization", {})})
        for k in ("fmax_mhz", "cycles_per_image", "images_per_s"):
            if k in e:
                row[k] = e[k]
        cp = e.get("critical_path")
        if cp:
            row["critical_from"], row["critical_to"], row["critical_ns"] = cp["from"], cp["to"], cp["delay_ns"]
        util = e.get("utilization", {})
        if util:
            row["limiting"] = LABELS[max(util, key=util.get)]
        if ref:
            for k in (*RESOURCES, "fmax_mhz", "images_per_s"):
                if row.get(k) and ref.get(k):
                    row[f"{k}_vs_dense"] = round(row[k] / ref[k], 4)
        rows.append(row)
    return rows


def format_synth_table(summary: dict) -> str:
    rows = synth_rows(summary)
    refused = [f"  {name}: {v['synth']['problem']}" for name, v in summary.get("variants", {}).items()
               if v.get("synth") and "lut" not in v["synth"]]
    if not rows:
        return "\n".join(["synthesis: no variant synthesised", *refused]) if refused else ""
    dev = next(iter(v["synth"] for v in summary["variants"].values() if "lut" in v.get("synth", {})))
    lines = [f"synthesis: yosys synth_ecp5 + nextpnr-ecp5, {dev['device']} out of context, target {dev['target_mhz']:g} MHz"]
    head = (f"{'variant':<18}" + "".join(f"{LABELS[k]:>14}" for k in RESOURCES) +
            f"{'Fmax MHz':>10}{'cycles':>8}{'images/s':>10}  limit  critical path")
    lines += [head, "-" * len(head)]
    for r in rows:
        cells = "".join(f"{r[k]:>7} {r.get(k + '_pct', 0):>5.1f}%" for k in RESOURCES)
        fmax = f"{r['fmax_mhz']:.1f}" if "fmax_mhz" in r else "-"
        ips = f"{r['images_per_s']:.0f}" if "images_per_s" in r else "-"
        cp = f"{r['critical_from']} -> {r['critical_to']} ({r['critical_ns']} ns)" if "critical_from" in r else "-"
        lines.append(f"{r['variant']:<18}{cells}{fmax:>10}{r.get('cycles_per_image', '-'):>8}{ips:>10}  "
                     f"{r.get('limiting', '-'):<5}  {cp}")
    for r in rows:
        ratios = [f"{LABELS.get(k, k)} {r[k + '_vs_dense']:.3f}" for k in (*RESOURCES, "fmax_mhz", "images_per_s")
                  if k + "_vs_dense" in r]
        if r["variant"] != "dense" and ratios:
            lines.append(f"  {r['variant']} / dense: " + ", ".join(ratios).replace("fmax_mhz", "Fmax")
                         .replace("images_per_s", "images/s"))
    for name, v in summary["variants"].items():
        if v.get("synth", {}).get("problem"):
            lines.append(f"  {name}: {v['synth']['problem']}")
    return "\n".join(lines)


def format_board_table(summary: dict) -> str:
    """The variants' board figures: the bitstream's resources and Fmax on the ULX3S-85F's pins at its PLL clock,
    the simulated host-to-board run, and a run on a real board when there was one."""
    variants = {n: v["board"] for n, v in summary.get("variants", {}).items() if v.get("board")}
    if not variants:
        return ""
    lines = ["board: ULX3S-85F (yosys synth_ecp5 + nextpnr-ecp5 on the board's pins + ecppack), serial host link"]
    head = (f"{'variant':<18}{'clock':>7}{'Fmax':>8}" + "".join(f"{LABELS[k]:>14}" for k in RESOURCES) +
            f"{'bitstream':>11}  simulated host run")
    lines += [head, "-" * len(head)]
    for name, b in variants.items():
        bit, sim = b.get("bitstream", {}), next((b[k] for k in sorted(b) if k.startswith("sim_")), None)
        cap = bit.get("capacity", {})
        cells = "".join(f"{bit[k]:>7} {100 * bit[k] / cap[k]:>5.1f}%" if k in bit and cap.get(k) else f"{'-':>14}"
                        for k in RESOURCES)
        ran = (f"{sim['simulator']}: {sim['match']}/{sim['images']} bit-exact, counters {sim['counters_equal']}/"
               f"{sim['images']}, framing errors answered" if sim else "-")
        lines.append(f"{name:<18}{bit.get('clock_mhz', '-'):>7}{bit.get('fmax_mhz', '-'):>8}{cells}"
                     f"{'written' if bit.get('bitstream') else '-':>11}  {ran}")
        if "run" in b:
            r = b["run"]
            lines.append(f"  {name} on a board at {r['port']}: {r['match']}/{r['images']} bit-exact, "
                         f"{r['images_per_s']} images/s")
    return "\n".join(lines)


def write_synth_files(run_dir: Path) -> list[Path]:
    """``synth/synth.csv`` and ``synth/synth.png`` (resources as % of the device, and Fmax, per variant)."""
    import numpy as np

    from prunehw.core.artifacts import pyplot, write_csv, write_png

    layout = RunLayout(run_dir)
    summary = read_json(layout.summary)
    rows = synth_rows(summary)
    if not rows:
        return []
    out = [write_csv(layout.synth() / "synth.csv", rows)]
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), dpi=120, gridspec_kw={"width_ratios": [3, 1]})
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        ax1.bar(np.arange(len(RESOURCES)) + i * width, [r.get(f"{k}_pct", 0) for k in RESOURCES], width,
                label=r["variant"])
    ax1.set_xticks(np.arange(len(RESOURCES)) + width * (len(rows) - 1) / 2, [LABELS[k] for k in RESOURCES])
    first = summary["variants"][rows[0]["variant"]]["synth"]
    ax1.set_ylabel(f"% of the {first['device']}")
    ax1.set_title("Resources after synthesis (yosys synth_ecp5)")
    ax1.legend(fontsize=8)
    ax2.bar([r["variant"] for r in rows], [r.get("fmax_mhz", 0) for r in rows], color="tab:gray")
    target = first["target_mhz"]
    ax2.axhline(target, color="tab:red", linestyle="--", label=f"target {target:g} MHz")
    ax2.set_ylabel("Fmax after routing (MHz)")
    ax2.set_title("nextpnr-ecp5 Fmax")
    ax2.tick_params(axis="x", labelrotation=30)
    ax2.legend(fontsize=8)
    out.append(write_png(fig, layout.synth() / "synth.png"))
    return out
