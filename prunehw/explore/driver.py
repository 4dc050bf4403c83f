"""The driver: run (or resume) a sweep, verify its Pareto points in RTL, and benchmark serial against Ray."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from prunehw.core.artifacts import stage_key

from .executors import _RayExecutor, _SerialExecutor
from .journal import _Cache, _Table, _write_failures
from .pareto import _fronts
from .sweep import Point, SweepConfig, _prune_key, _quant_key, grid
from .tasks import _data, hw_task, prune_task, quant_task, verify_task


def run_sweep(sweep: SweepConfig, *, serial: bool = False, address: str | None = None, workers: int | None = None,
              force: bool = False, out_dir: Path | None = None, verify: str | None = None, log=print) -> dict:
    """Run (or resume) the sweep; returns its summary (points, failures, seconds, fronts, verification)."""
    from tqdm.auto import tqdm

    from prunehw.core.artifacts import read_json, sha256_file, update_summary, write_json
    from prunehw.core.artifacts import code_closure, code_digest
    from prunehw.flow import Flow

    out = Path(out_dir or sweep.out_dir)
    verify = verify or sweep.verify
    flow = Flow(sweep.run, log=log)
    dense_path = flow.train()                  # shared stage 0: the base run's model, cached by the flow
    run = sweep.run.to_toml_dict()
    from prunehw.hw.models.energy import DEFAULT_ENERGY_TABLE

    # what a point's figures depend on: the base run, its trained model, and the code and data that compute them
    # (the code: prunehw.model/export/hw with their data files, every module of this package, and every prunehw
    # module the driver and its tasks import)
    fingerprint = stage_key(sweep.run.key("data", "network", "train", "prune"),
                          {k: v for k, v in sweep.run.quant.to_dict().items() if k in ("act_bits", "calibration_images")},
                          sha256_file(dense_path), sweep.tile_aware, code_digest("model", "export", "hw", "explore"),
                          code_closure(__name__, "prunehw.explore.tasks"),
                          sha256_file(DEFAULT_ENERGY_TABLE))
    meta_path = out / "sweep.json"
    if force or (meta_path.is_file() and read_json(meta_path).get("fingerprint") != fingerprint):
        if meta_path.is_file() and not force:
            log(f"explore {sweep.name}: the base run, budget or code changed since {out} was written; starting over")
        import shutil

        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json(meta_path, {"fingerprint": fingerprint, "sweep": str(sweep.path), "axes": {
        k: [f"{r}x{c}" for r, c in v] if k == "array" else v for k, v in sweep.axes.items()}})
    table = _Table(out / "points.csv", out / "journal.jsonl")
    cache = _Cache(out / "cache", fingerprint)
    points = grid(sweep)
    todo = [p for p in points if p.id not in table.rows]
    log(f"explore {sweep.name}: {len(points)} points, {len(points) - len(todo)} already in {out / 'points.csv'}, "
        f"{len(todo)} to compute ({'serial, this process' if serial else 'Ray'})")
    inject = _injections(out)

    t0 = time.perf_counter()
    failed: dict[str, str] = {}
    task_seconds: dict = {}
    if todo:
        ex = _SerialExecutor(sweep.retries) if serial else _RayExecutor(sweep.retries, address, workers)
        try:
            dense = ex.put(dense_path.read_bytes())
            handles, meta = [], {}
            pruned, quant = {}, {}
            for p in todo:
                pk, qk = _prune_key(sweep, p), _quant_key(sweep, p)
                if pk not in pruned:
                    hit = cache.get("prune", pk)
                    pruned[pk] = ex.put(hit) if hit is not None else ex.submit(prune_task, run, dense, *pk)
                    if hit is None:
                        handles.append(pruned[pk])
                        meta[pruned[pk]] = ("prune", pk)
                if qk not in quant:
                    hit = cache.get("quant", qk)
                    quant[qk] = ex.put(hit) if hit is not None else ex.submit(quant_task, run, dense, pruned[pk], p.weight_bits)
                    if hit is None:
                        handles.append(quant[qk])
                        meta[quant[qk]] = ("quant", qk)
                h = ex.submit(hw_task, quant[qk], p.rows, p.cols, p.dataflow, inject.get(p.id))
                handles.append(h)
                meta[h] = ("point", p)
            bar = tqdm(total=len(points), initial=len(points) - len(todo), desc=f"explore {sweep.name}", unit="point",
                       disable=False, dynamic_ncols=True)

            def tick():
                bar.set_postfix_str(f"running {ex.running}/{ex.cpus} cpu, failed {len(failed)}")

            for h, ok, value in ex.as_completed(handles, tick=tick):
                stage, key = meta[h]
                if stage in ("prune", "quant"):
                    if ok:
                        cache.put(stage, key, value)
                    continue
                p = key
                if ok:
                    table.append(_row(p, ex.get(pruned[_prune_key(sweep, p)]), ex.get(quant[_quant_key(sweep, p)]), value))
                else:
                    text = str(value).strip()
                    failed[p.id] = f"{type(value).__name__}: {text.splitlines()[-1] if text else ''}"
                bar.update(1)
                tick()
            bar.close()
            task_seconds = ex.task_seconds()
        finally:
            ex.shutdown()
    seconds = time.perf_counter() - t0
    table.rewrite_in_order([p.id for p in points])
    _write_failures(out / "failed.csv", failed)
    summary = _fronts(sweep, out, list(table.rows[p.id] for p in points if p.id in table.rows), log)
    if verify == "pareto":
        summary["verified"] = _verify(sweep, out, cache, summary.pop("_front_rows"), serial, address, workers, log)
    summary.pop("_front_rows", None)
    summary.update({"points": len(points), "computed_now": len(todo) - len(failed), "failed": len(failed),
                    "seconds": round(seconds, 2), "task_seconds": task_seconds, "mode": "serial" if serial else "ray",
                    "table": str(out / "points.csv")})
    write_json(out / "explore.json", summary)
    if out_dir is None:
        update_summary(sweep.run.run_dir, {"explore": {sweep.name: summary}})
    log(f"explore {sweep.name}: {len(table.rows)}/{len(points)} points in {out / 'points.csv'}, {len(failed)} failed, "
        f"{seconds:.1f} s this run")
    if failed:
        log(f"explore {sweep.name}: failed points (retried {sweep.retries}x) listed in {out / 'failed.csv'}; "
            f"rerun to retry them")
    return summary


def _injections(out: Path) -> dict[str, str]:
    """Test hook: ``PRUNEHW_EXPLORE_INJECT='{"<point id>": "always"|"once"}'`` makes that point's task fail."""
    raw = os.environ.get("PRUNEHW_EXPLORE_INJECT")
    if not raw:
        return {}
    spec = json.loads(raw)
    return {k: v if v == "always" else f"once:{out / 'inject' / k}" for k, v in spec.items()}


def _row(p: Point, pruned: dict, quant: dict, hw: dict) -> dict:
    return {"point": p.id, "method": p.method, "ratio": p.ratio, "criterion": p.criterion, "weight_bits": p.weight_bits,
            "array": p.array, "rows": p.rows, "cols": p.cols, "dataflow": p.dataflow,
            "ratio_measured": round(pruned["ratio_measured"], 6), "weights_kept": pruned["weights_kept"],
            "weight_storage_bits": hw["weights_nonzero"] * p.weight_bits, "accuracy_float": pruned["accuracy_float"],
            "accuracy_quant": quant["accuracy_quant"], "test_images": quant["test_images"], "cycles": hw["cycles"],
            "macs": hw["macs"], "pe_utilization": round(hw["pe_utilization"], 6),
            "weight_rom_bytes": hw["weight_rom_bytes"], "energy_pj": round(hw["energy_pj"], 3)}


def _verify(sweep: SweepConfig, out: Path, cache: _Cache, front_rows: list[dict], serial: bool, address, workers,
            log) -> dict:
    """RTL-simulate every Pareto point (Verilator, cocotb) and compare with golden logits and the analytic model."""
    from prunehw.core.artifacts import write_json
    from prunehw.sim.runner import SimulatorMissing, simulator_missing

    reason = simulator_missing("verilator")
    if reason:
        raise SimulatorMissing(reason)
    data = _data(sweep.run)
    images = data.x_test[: sweep.verify_images]
    by_id = {p.id: p for p in grid(sweep)}
    ex = _SerialExecutor(0) if serial else _RayExecutor(0, address, workers)
    results = {}
    try:
        handles, meta = [], {}
        for r in front_rows:
            p = by_id[r["point"]]
            q = cache.get("quant", _quant_key(sweep, p))
            h = ex.submit(verify_task, ex.put(q), p.rows, p.cols, images)
            handles.append(h)
            meta[h] = r
        from tqdm.auto import tqdm

        bar = tqdm(total=len(handles), desc="verify Pareto points (Verilator)", unit="point")
        for h, ok, value in ex.as_completed(handles):
            r = meta[h]
            if ok:
                value["cycles_analytic"] = int(r["cycles"])
                value["rtl_cycles_equal"] = value["rtl_cycles"] == int(r["cycles"])
            else:
                value = {"error": f"{type(value).__name__}: {value}"}
            results[r["point"]] = value
            bar.update(1)
        bar.close()
    finally:
        ex.shutdown()
    write_json(out / "verified.json", results)
    ok = sum(1 for v in results.values() if v.get("rtl_match") == v.get("rtl_total") and v.get("rtl_equals_analytic"))
    log(f"explore {sweep.name}: {ok}/{len(results)} Pareto points verified in Verilator on {len(images)} test images "
        f"each (logits bit-exact, every counter equal to the analytic model); {out / 'verified.json'}")
    return {"points": len(results), "passed": ok, "images": int(len(images))}


def benchmark(sweep: SweepConfig, *, workers: int | None = None, log=print) -> dict:
    """The same sweep from scratch twice, serial (one process) then on Ray; prints both times and the ratio."""
    from prunehw.core.artifacts import update_summary, write_json

    base = sweep.out_dir.with_name(sweep.out_dir.name + "-benchmark")
    log(f"benchmark: {len(grid(sweep))} points, shared training excluded (cached by the base run)")
    serial = run_sweep(sweep, serial=True, force=True, out_dir=base / "serial", verify="none", log=log)
    ray = run_sweep(sweep, serial=False, force=True, out_dir=base / "ray", workers=workers, verify="none", log=log)
    same = (base / "serial" / "points.csv").read_bytes() == (base / "ray" / "points.csv").read_bytes()
    res = {"points": serial["points"], "serial_seconds": serial["seconds"], "ray_seconds": ray["seconds"],
           "speedup": round(serial["seconds"] / ray["seconds"], 3) if ray["seconds"] else None,
           "ray_cpus": workers or os.cpu_count(), "same_table": same,
           "task_seconds": {"serial": serial["task_seconds"], "ray": ray["task_seconds"]},
           "failed": {"serial": serial["failed"], "ray": ray["failed"]}}
    write_json(base / "benchmark.json", res)
    update_summary(sweep.run.run_dir, {"explore": {sweep.name: {"benchmark": res}}})
    log(f"benchmark {sweep.name}: {res['points']} points; serial {res['serial_seconds']:.1f} s, Ray "
        f"{res['ray_seconds']:.1f} s on {res['ray_cpus']} CPUs: {res['speedup']}x; tables "
        f"{'identical' if same else 'DIFFERENT'} ({base})")
    for mode in ("serial", "ray"):
        busy = res["task_seconds"][mode]
        log(f"benchmark {sweep.name}: {mode} task time " + ", ".join(
            f"{k} {v['tasks']} x {v['seconds'] / max(v['tasks'], 1):.2f} s" for k, v in sorted(busy.items())) +
            f" = {sum(v['seconds'] for v in busy.values()):.1f} s")
    return res
