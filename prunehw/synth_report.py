"""The synthesis stage of a run (``prunehw synth``, ``make synth-report``): every variant's accelerator through
yosys and nextpnr-ecp5, cached, then one table, a CSV and a PNG of resources and Fmax against dense.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prunehw.core.artifacts import read_json, record_stage, sha256_file, stage_is_current, update_variant, write_json
from prunehw.core.layout import RunLayout

__all__ = ["ToolMissing", "synth_variants", "synth_rows", "device_rows", "format_device_table", "format_board_table", "format_synth_table", "write_synth_files"]

RESOURCES = ("lut", "ff", "carry", "dsp", "bram")
LABELS = {"lut": "LUT4", "ff": "FF", "carry": "CCU2C", "dsp": "DSP", "bram": "EBR"}


class ToolMissing(RuntimeError):
    """yosys or nextpnr-ecp5 is not installed; the message says which and how to get it."""


def _shares(e: dict) -> dict:
    """Each resource's share of the part, in percent to the tenth that the tables print, from the counts
    (``utilization`` in summary.json is rounded already: rounding it again could print a tenth too many)."""
    cap = e.get("capacity", {})
    return {f"{k}_pct": round(100 * e[k] / cap[k], 1) for k in RESOURCES if cap.get(k) and k in e}


def _summary_entry(res: dict, desc: dict, sim_cycles: int | None) -> dict:
    """The ``synth`` entry of a variant in summary.json: measured figures plus images/s at the measured Fmax."""
    cycles = sim_cycles or desc["cycles_analytic"]["total"]
    entry = {k: res[k] for k in RESOURCES}
    entry.update(device=res["device"], tools=res["tools"], target_mhz=res["target_mhz"], fits=res["fits"],
                 capacity=res.get("capacity", {}), seconds=res.get("seconds", {}))
    if res.get("capacity"):
        entry["utilization"] = {k: round(res[k] / res["capacity"][k], 4) for k in RESOURCES if res["capacity"].get(k)}
    for k in ("fmax_mhz", "meets_timing", "critical_path", "problem", "multipliers", "check", "array", "spram",
              "placed_as"):
        if k in res:
            entry[k] = res[k]
    if "fmax_mhz" in res:
        entry["cycles_per_image"] = cycles
        entry["cycles_source"] = "rtl" if sim_cycles else "analytic"
        entry["images_per_s"] = round(res["fmax_mhz"] * 1e6 / cycles, 1)
    return entry


def _folder(layout, v: str, name: str, primary: str) -> Path:
    """Where ``v`` is synthesised for part ``name``: the variant's ``synth/`` for the run's device, a folder per
    part below it for the device table's other parts."""
    return layout.synth(v) if name == primary else layout.synth(v) / name


def synth_variants(flow, variants: list[str], force: bool = False, devices: list[str] | None = None) -> dict[str, dict]:
    """Synthesise and place-and-route each variant's ``prunehw_top`` on the run's device (``[synth] device``) and
    on each part of the device table (``devices``, else ``[synth] devices``), cached per part on the Verilog's
    hash and the tools'.

    Each part is checked first (:func:`~prunehw.hw.target.devices.fit_problem`, then whether the generator builds
    for it): a part that cannot hold the design gets its one-line reason and no tool runs. A part with fewer
    multipliers than the array has PEs gets its own Verilog (``<variant>/synth/<part>/rtl/``: the PEs beyond its
    DSPs multiply in LUTs), checked in Verilator on ``[synth] check_images`` test images (bit-exact, every
    counter equal to the analytic model) before it is synthesised. yosys runs once per variant and Verilog (the
    run's device first); the other parts of the family place that netlist. Runs
    ``cfg.synth.workers`` variants at once; returns {variant: the run's device's summary entry}, and writes each
    variant's ``devices`` (every part's entry) and ``smallest_device``.
    """
    from prunehw.core.artifacts import code_closure, code_digest, stage_key
    from prunehw.hw.generate import TOP_NAME
    from prunehw.hw.target.devices import by_size, device, fit_problem
    from prunehw.hw.target.ecp5 import multipliers
    from prunehw.hw.target.synth import SynthFailed, run_synthesis, tool_versions, tools_missing

    cfg, run_dir, layout = flow.cfg.synth, flow.run_dir, flow.layout
    primary = cfg.device
    parts = [primary, *(p for p in by_size(devices if devices is not None else cfg.devices) if p != primary)]
    for name in parts:
        device(name)                     # (an unknown part: refused in one line before anything runs)
    refused, descs = {}, {}
    for v in variants:
        flow.rtl(v)
        descs[v] = read_json(layout.accelerator(v))
        arr = descs[v]["array"]
        for name in parts:
            dev = device(name)
            # what the part lacks (or that the generator cannot build for it), said before any tool runs; a part
            # whose memories map their own way (the iCE40's) is checked on the arrays it could be built with
            if dev.family == "ice40":
                problem = _array_problem(flow, v, name)
            else:
                problem = fit_problem(dev, descs[v]["memory_shapes"], arr["rows"] * arr["cols"],
                                      (arr["weight_bits"], arr["x_bits"]))
            if problem is None and dev.unsupported:
                problem = f"not built for the {dev.name}: {dev.unsupported}"
            if problem:
                refused[v, name] = {"device": dev.name, "target_mhz": dev.target_mhz or cfg.target_mhz, "fits": False,
                                    "problem": problem}
    built = [(v, n) for v in variants for n in parts if (v, n) not in refused]
    versions = {}
    for family in dict.fromkeys(device(n).family for _, n in built):
        reason = tools_missing(family)
        if reason:
            raise ToolMissing(reason)
        versions[family] = tool_versions(family)
    # the Verilog each part places: the run's (built for its device), or the part's own where the multipliers split
    # differently (fewer DSPs than PEs)
    rtl_of = {}
    for v, name in built:
        pes = descs[v]["array"]["rows"] * descs[v]["array"]["cols"]
        same = device(name).family == device(primary).family and multipliers(pes, name) == multipliers(pes, primary)
        rtl_of[v, name] = layout.rtl(v) if same else _part_verilog(flow, v, name, _folder(layout, v, name, primary) / "rtl")
    keys, results, jobs = {}, {}, {}
    for v, name in built:
        keys[v, name] = stage_key(sha256_file(rtl_of[v, name] / f"{TOP_NAME}.v"), versions[device(name).family],
                                  device(name).target_mhz or cfg.target_mhz, cfg.seed,
                                  # (an iCE40 part places the board top: its serial link's settings too)
                                  *([flow.cfg.key("board")] if device(name).family == "ice40" else []),
                                  name, code_digest("hw"), code_closure(__name__),
                                  *([cfg.check_images] if rtl_of[v, name] != layout.rtl(v) else []))
        out = _folder(layout, v, name, primary) / "synth.json"
        if not force and stage_is_current(run_dir, _stage(v, name, primary), keys[v, name]):
            results[v, name] = read_json(out)
        else:
            jobs.setdefault(v, []).append(name)

    status: dict[str, str] = {}
    lock = threading.Lock()
    bar = None
    if jobs:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(map(len, jobs.values())), desc="synth + place-and-route", unit="design")

    def progress(v, name):
        def report(step, seconds):
            with lock:
                status[f"{v} {name}"] = f"{step} {seconds:.0f}s"
                bar.set_postfix_str("; ".join(f"{k}: {s}" for k, s in status.items()), refresh=True)
        return report

    if any(rtl_of[v, n] != layout.rtl(v) for v, n in built):
        from prunehw.sim.runner import simulator_missing
        from prunehw.stages.sim import sim_images

        reason = simulator_missing("verilator")
        if reason:                # (a part's own Verilog is checked before it is synthesised)
            raise ToolMissing(reason)
        sim_images(flow)          # (the test images the checks read, written once before the threads)

    def one(v):
        """The variant's parts in turn: yosys on the first of each family and Verilog, that netlist placed on the
        family's other parts with the same Verilog; a part's own Verilog checked in Verilator first."""
        from prunehw.stages.sim import check_verilog

        done, netlists = {}, {}
        for name in parts:
            if (v, name) in results and (v, name) not in refused:
                netlists.setdefault((device(name).family, rtl_of[v, name]), _folder(layout, v, name, primary))
        for name in jobs[v]:
            folder, family, rtl_dir = _folder(layout, v, name, primary), device(name).family, rtl_of[v, name]
            own = rtl_dir != layout.rtl(v)
            try:
                check = None
                if own:
                    say = progress(v, name)
                    say(f"verilator check of its Verilog ({cfg.check_images} images)", 0)
                    check = check_verilog(flow, v, rtl_dir, cfg.check_images, folder / "sim_verilator",
                                          workers=max(1, cfg.workers // len(jobs)))
                    if check["match"] != check["total"] or not check["counters_equal"]:
                        raise SynthFailed(f"its Verilog for the {name} failed its check in Verilator: {check['match']}/"
                                          f"{check['total']} images bit-exact, counters "
                                          f"{'equal to' if check['counters_equal'] else 'DIFFERENT from'} the model; "
                                          f"first mismatch {check['first_mismatch']}; {folder / 'sim_verilator'}")
                # (a Verilog with fabric multipliers: yosys must not map them onto DSPs the part lacks)
                split = read_json(rtl_dir / "accelerator.json").get("multipliers")
                if family == "ice40":     # (placed only on pins: the board top around this Verilog's design)
                    res = _place_board_top(flow, v, name, folder, progress(v, name))
                else:
                    res = run_synthesis(rtl_dir / f"{TOP_NAME}.v", TOP_NAME, folder, cfg.target_mhz,
                                        seed=cfg.seed, progress=progress(v, name), device=name,
                                        netlist_from=netlists.get((family, rtl_dir)), nodsp=split is not None)
                if split is not None or family == "ice40":
                    # (the array a part's own Verilog was built on, where the part chose it)
                    array = read_json(rtl_dir / "accelerator.json")["array"] if family == "ice40" else None
                    res = {**res.to_dict(), **({"multipliers": split} if split else {}),
                           **({"array": f"{array['rows']}x{array['cols']}"} if array else {}),
                           **({"check": check} if check else {})}
                    write_json(folder / "synth.json", res)
                done[name] = res
            except SynthFailed as exc:
                done[name] = exc
            else:
                netlists.setdefault((family, rtl_dir), folder)
            with lock:
                status.pop(f"{v} {name}", None)
                bar.update(1)
        return done

    errors = {}
    with ThreadPoolExecutor(max_workers=max(1, min(cfg.workers, len(jobs) or 1))) as pool:
        futures = {v: pool.submit(one, v) for v in jobs}
        for v, fut in futures.items():
            for name, res in fut.result().items():
                if isinstance(res, SynthFailed):
                    errors[v, name] = res
                    continue
                results[v, name] = res if isinstance(res, dict) else res.to_dict()
                record_stage(run_dir, _stage(v, name, primary), keys[v, name],
                             [_folder(layout, v, name, primary) / "synth.json"])
    if bar is not None:
        bar.close()
    entries = {}
    summary = read_json(layout.summary).get("variants", {})
    for v in variants:
        table = {}
        for name in parts:
            if (v, name) in refused:
                table[name] = refused[v, name]
                write_json(_folder(layout, v, name, primary) / "synth.json", refused[v, name])   # (not an earlier run's figures)
            elif (v, name) in results:
                # (a part that chose its own array: that array's cycles, equal to its Verilog's in the Verilator check)
                own = device(name).family == "ice40"
                desc = read_json(rtl_of[v, name] / "accelerator.json") if own else descs[v]
                table[name] = _summary_entry(results[v, name], desc,
                                             None if own else summary.get(v, {}).get("cycles", {}).get("rtl"))
        # (the smallest part that holds the design at the clock asked for: placed, and timing met where measured)
        fits = [n for n in by_size(table) if table[n].get("fits") and "lut" in table[n]
                and table[n].get("meets_timing") is not False]
        record = {"devices": table, **({"smallest_device": fits[0]} if fits else {})}
        if primary in table:
            record["synth"] = entries[v] = table[primary]
        update_variant(run_dir, v, record, replace=("synth", "devices", "smallest_device"))
        for name in parts:
            if (v, name) in refused:
                flow.log(f"synth {v}: {refused[v, name]['problem']} (nothing synthesised)")
            elif name in table:
                flow.log(_line(v, table[name], _folder(layout, v, name, primary), cached=name not in jobs.get(v, ())))
    for (v, name), exc in errors.items():
        flow.log(f"synth {v} on the {name}: FAILED: {exc}")
    if errors:
        from prunehw.core.errors import PrunehwError

        failed = ", ".join(f"{v} on the {n}" for v, n in errors)
        raise PrunehwError(f"synth: {len(errors)} design(s) failed ({failed}); the logs are named above")
    return entries


def _array_problem(flow, v: str, name: str) -> str | None:
    """What part ``name`` lacks for ``v`` on every array it could be built with (None: one fits; see
    :func:`~prunehw.hw.generate.array_for`)."""
    from prunehw.core.errors import ConfigError
    from prunehw.export.contract import load_contract
    from prunehw.hw.generate import array_for

    try:
        array_for(load_contract(flow.quantize(v)), flow.cfg.array, name)
    except ConfigError as exc:
        return str(exc).split("; allowed:")[0]
    return None


def _place_board_top(flow, v: str, name: str, folder: Path, progress):
    """``v``'s board top for the iCE40 part ``name`` (the iCEBreaker's: the board core, built on the part's array,
    on its pins) through yosys and nextpnr-ice40 in ``folder``: nextpnr-ice40 has no out-of-context placement,
    and the bare accelerator's ports outnumber the package's pins."""
    from prunehw.board import board_core
    from prunehw.core.errors import ConfigError
    from prunehw.hw.gateware.board_core import BOARD_TOP
    from prunehw.hw.target.devices import device
    from prunehw.hw.target.icebreaker import write_board_sources
    from prunehw.hw.target.synth import SynthFailed, run_synthesis

    try:        # (the serial link's divisor and timeout at the iCEBreaker's clock, checked as its [board] is)
        board = flow.cfg.board.replace(name="iCEBreaker")
    except ConfigError as exc:
        raise SynthFailed(f"the iCEBreaker board top: {exc}") from None
    core, _, _ = board_core(flow, v, divisor=board.divisor, timeout=board.timeout_cycles, device=name)
    verilog, pins = write_board_sources(core, folder)
    res = run_synthesis(verilog, BOARD_TOP, folder, device(name).target_mhz or flow.cfg.synth.target_mhz,
                        seed=flow.cfg.synth.seed, progress=progress, lpf=pins.name, device=name)
    res.placed_as = "iCEBreaker board top (serial host link, on its pins)"
    return res


def _part_verilog(flow, v: str, name: str, out: Path) -> Path:
    """``v``'s Verilog built for part ``name`` in ``out`` (cached like the rtl stage, on the contract, the array,
    the generator's code and the part)."""
    from prunehw.core.artifacts import code_digest, stage_key
    from prunehw.export.contract import load_contract
    from prunehw.hw.generate import generate_verilog
    from prunehw.hw.target.devices import device

    contract = flow.quantize(v)
    key = stage_key(flow.cfg.key("array"), sha256_file(contract), sha256_file(contract.with_name("weights.npz")),
                    code_digest("hw"), name)
    stage = f"rtl:{v}:{name}"
    if not stage_is_current(flow.run_dir, stage, key):
        verilog, desc, _ = generate_verilog(load_contract(contract), flow.cfg.array, out, device=name)
        record_stage(flow.run_dir, stage, key, [verilog, desc])
        d = read_json(desc)
        if "multipliers" in d:
            split = d["multipliers"]
            flow.log(f"rtl {v} for the {name}: {split['lut']} of its multipliers in LUTs (the part has {split['dsp']} "
                     f"{device(name).dsp}); wrote {verilog}")
        else:
            flow.log(f"rtl {v} for the {name}: {d['array']['rows']}x{d['array']['cols']} array, the largest whose "
                     f"memories the part holds, {d['cycles_analytic']['total']} cycles per image (analytic); wrote {verilog}")
    return out


def _stage(v: str, name: str, primary: str) -> str:
    """The manifest's stage name of ``v`` on part ``name`` (the run's device keeps the name it always had)."""
    return f"synth:{v}" if name == primary else f"synth:{v}:{name}"


def _line(v: str, e: dict, folder: Path, cached: bool = False) -> str:
    spram = f", {e['spram']} SPRAM" if "spram" in e else ""
    array = f" ({e['array']} array)" if "array" in e else ""
    carry = "SB_CARRY" if "spram" in e else "CCU2C"
    head = (f"synth {v}: {'up to date, ' if cached else ''}{e['lut']} LUT4, {e['ff']} FF, {e['carry']} {carry}, {e['dsp']} DSP, "
            f"{e['bram']} EBR{spram} on the {e['device']}{array}")
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
        row.update(_shares(e))
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


def device_rows(summary: dict) -> list[dict]:
    """One row per variant and part of the device table: placed (resources as % of the part, Fmax, cycles,
    images/s) or why not; the parts in size order, ``smallest`` marking each variant's smallest placed part."""
    from prunehw.hw.target.devices import by_size

    rows = []
    for name, v in summary.get("variants", {}).items():
        table = v.get("devices") or {}
        for part in by_size(table):
            e = table[part]
            row = {"variant": name, "device": part, "placed": bool(e.get("fits") and "lut" in e),
                   "smallest": part == v.get("smallest_device")}
            if "lut" in e:
                row.update({k: e[k] for k in RESOURCES})
                row.update(_shares(e))
            for k in ("target_mhz", "fmax_mhz", "meets_timing", "cycles_per_image", "images_per_s", "array", "spram"):
                if k in e:
                    row[k] = e[k]
            if e.get("problem"):
                row["problem"] = e["problem"]
            rows.append(row)
    return rows


def format_device_table(summary: dict) -> str:
    """The variant x device table: each part's utilisation, Fmax and images/s where placed, the one-line reason
    where not, and each variant's smallest part."""
    rows = device_rows(summary)
    if not rows or len({r["device"] for r in rows}) < 2:
        return ""
    parts = list(dict.fromkeys(r["device"] for r in sorted(rows, key=lambda r: r["device"])))
    lines = ["device table: each variant's Verilog placed on each part (yosys + nextpnr, out of context; an iCE40 in "
             "the iCEBreaker's board top on its pins), or refused before any tool with what the part lacks"]
    head = f"{'variant':<20}{'device':<11}" + "".join(f"{LABELS[k]:>8}" for k in RESOURCES) + \
        f"{'Fmax MHz':>10}{'images/s':>10}"
    lines += [head, "-" * len(head)]
    for r in rows:
        if r["placed"]:
            cells = "".join(f"{r.get(k + '_pct', 0):>7.1f}%" for k in RESOURCES)
            fmax = f"{r['fmax_mhz']:.1f}" if "fmax_mhz" in r else "-"
            ips = f"{r['images_per_s']:.0f}" if "images_per_s" in r else "-"
            own = f"  ({r['array']} array, {r['spram']} SPRAM, at {r['target_mhz']:g} MHz)" if "array" in r else ""
            lines.append(f"{r['variant']:<20}{r['device']:<11}{cells}{fmax:>10}{ips:>10}"
                         + ("  smallest" if r["smallest"] else "") + own
                         + (f"  ({r['problem']})" if r.get("problem") else ""))
        else:
            lines.append(f"{r['variant']:<20}{r['device']:<11}  {r.get('problem', 'not placed')}")
    for name, v in summary.get("variants", {}).items():
        if v.get("devices"):
            small = v.get("smallest_device")
            at = f" (at {v['devices'][small]['target_mhz']:g} MHz)" if small else ""
            lines.append(f"  {name}: smallest part placed with its clock met: {small or f'none of {len(parts)}'}{at}")
    return "\n".join(lines)


#: Each board's table heading: its tools.
BOARD_TOOLS = {"ULX3S-85F": "yosys synth_ecp5 + nextpnr-ecp5 on the board's pins + ecppack",
               "iCEBreaker": "yosys synth_ice40 + nextpnr-ice40 on the board's pins + icepack"}


def format_board_table(summary: dict) -> str:
    """The variants' board figures, a table per board: the bitstream's resources and Fmax on the board's pins at
    its clock, the simulated host-to-board run, and a run on a real board when there was one. A variant's
    ``board`` holds the ULX3S-85F's figures, and another board's under its name."""
    boards: dict[str, dict] = {}
    for n, v in summary.get("variants", {}).items():
        for board in BOARD_TOOLS:
            b = v.get("board", {})
            b = {k: e for k, e in b.items() if k not in BOARD_TOOLS} if board == "ULX3S-85F" else b.get(board, {})
            if b:
                boards.setdefault(board, {})[n] = b
    out = []
    for board, variants in boards.items():
        lines = [f"board: {board} ({BOARD_TOOLS[board]}), serial host link"]
        labels = {**LABELS, "carry": "SB_CARRY"} if board == "iCEBreaker" else LABELS
        head = (f"{'variant':<18}{'clock':>7}{'Fmax':>8}" + "".join(f"{labels[k]:>14}" for k in RESOURCES) +
                f"{'bitstream':>11}  simulated host run")
        lines += [head, "-" * len(head)]
        for name, b in variants.items():
            bit, sim = b.get("bitstream", {}), next((b[k] for k in sorted(b) if k.startswith("sim_")), None)
            shares = _shares(bit)
            cells = "".join(f"{bit[k]:>7} {shares[k + '_pct']:>5.1f}%" if k + "_pct" in shares else f"{'-':>14}"
                            for k in RESOURCES)
            ran = (f"{sim['simulator']}: {sim['match']}/{sim['images']} bit-exact, counters {sim['counters_equal']}/"
                   f"{sim['images']}, framing errors answered" if sim else "-")
            lines.append(f"{name:<18}{bit.get('clock_mhz', '-'):>7}{bit.get('fmax_mhz', '-'):>8}{cells}"
                         f"{'written' if bit.get('bitstream') else '-':>11}  {ran}")
            if "array" in bit:
                lines.append(f"  {name}: on a {bit['array']} array, {bit.get('spram', 0)} SPRAM")
            if "run" in b:
                r = b["run"]
                lines.append(f"  {name} on a board at {r['port']}: {r['match']}/{r['images']} bit-exact, "
                             f"{r['images_per_s']} images/s")
        out.append("\n".join(lines))
    return "\n\n".join(out)


def write_synth_files(run_dir: Path) -> list[Path]:
    """``synth/synth.csv`` and ``synth/synth.png`` (resources as % of the device, and Fmax, per variant)."""
    import numpy as np

    from prunehw.core.artifacts import pyplot, write_csv, write_png

    layout = RunLayout(run_dir)
    summary = read_json(layout.summary)
    rows = synth_rows(summary)
    if not rows:
        return []
    out = [write_csv(layout.synth() / "synth.csv", rows)] + _write_device_files(layout, summary)
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


def _write_device_files(layout: RunLayout, summary: dict) -> list[Path]:
    """``synth/devices.csv`` and ``synth/devices.png``: per variant and part, LUT and block RAM as % of the part
    where placed, a cross where refused, once the run has a device table of two parts or more."""
    import numpy as np

    from prunehw.core.artifacts import pyplot, write_csv, write_png

    rows = device_rows(summary)
    parts = list(dict.fromkeys(r["device"] for r in rows))
    if len(parts) < 2:
        return []
    out = [write_csv(layout.synth() / "devices.csv", rows)]
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), dpi=120, sharey=False)
    width = 0.8 / len(variants)
    for ax, key, title in zip(axes, ("lut", "bram", "dsp"), ("LUT4", "block RAM", "multipliers")):
        for i, v in enumerate(variants):
            mine = {r["device"]: r for r in rows if r["variant"] == v}
            xs = np.arange(len(parts)) + i * width
            ys = [mine[p].get(f"{key}_pct", 0) if p in mine and mine[p]["placed"] else 0 for p in parts]
            bars = ax.bar(xs, ys, width, label=v)
            for x, p in zip(xs, parts):
                if p in mine and not mine[p]["placed"]:
                    ax.plot(x, 2, "x", color=bars.patches[0].get_facecolor(), markersize=8)
        ax.axhline(100, color="tab:red", linestyle="--", linewidth=1)
        ax.set_xticks(np.arange(len(parts)) + width * (len(variants) - 1) / 2, parts, fontsize=8)
        ax.set_ylabel(f"{title}, % of the part")
        ax.set_title(f"{title} (x: does not fit)")
    axes[0].legend(fontsize=7)
    out.append(write_png(fig, layout.synth() / "devices.png"))
    return out
