"""The ``sim`` stage: each variant's accelerator RTL under cocotb (Verilator or Icarus) on the run's test images,
every image's logits against the golden model and every counter against the analytic model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from prunehw.core.artifacts import code_digest, record_stage, sha256_file, stage_is_current, stage_key, update_variant
from prunehw.stages import code_key
from prunehw.stages.rtl import merge_layers

__all__ = ["sim", "sim_images", "check_verilog"]


def sim(flow, variants: list[str], simulator: str, images: int, workers: int = 2, waves: bool = False,
        force: bool = False) -> dict[str, dict]:
    """Run each variant's RTL under cocotb in ``simulator`` on the first ``images`` test images (0 = all).

    Jobs (variant x shard) run in ``workers`` simulator processes. Returns
    {variant: merged result}; a missing simulator raises ``SimulatorMissing``.
    """
    from prunehw.core.artifacts import write_json
    from prunehw.sim.regression import merge, run_jobs
    from prunehw.sim.runner import SimulatorMissing, simulator_missing

    reason = simulator_missing(simulator)
    if reason:
        raise SimulatorMissing(reason)
    data = flow.data
    n = images or len(data.x_test)
    if n > len(data.x_test):
        from prunehw.core.errors import ConfigError

        raise ConfigError(f"--images {n}: the test set has {len(data.x_test)} images")
    img_path = sim_images(flow)
    images_digest = sha256_file(img_path)
    jobs, keys, results, cached = [], {}, {}, set()
    # every variant split into ``workers`` equal shards (sharing the variant's build), so the
    # processes stay balanced even when one variant is much slower than another
    shards = max(1, min(workers, n // 50))
    for v in variants:
        rtl_dir = flow.rtl(v)
        contract = flow.quantize(v)
        key = stage_key(sha256_file(rtl_dir / "prunehw_top.v"), sha256_file(contract), n, simulator, code_digest("sim"),
                        code_key(__name__), images_digest)
        keys[v] = key
        stage = f"sim:{simulator}:{v}"
        if not force and stage_is_current(flow.run_dir, stage, key):
            from prunehw.core.artifacts import read_json

            results[v] = read_json(flow.layout.sim(v, simulator) / "result.json")
            cached.add(v)
            continue
        bounds = np.linspace(0, n, shards + 1).astype(int)
        jobs += [_job(flow, v, simulator, rtl_dir, flow.layout.sim(v, simulator), img_path, int(bounds[s]),
                      int(bounds[s + 1]), n, s, waves) for s in range(shards)]
    if jobs:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc=f"{simulator} jobs", unit="job")
        parts = run_jobs(jobs, workers, progress=lambda r: bar.update(1))
        bar.close()
        for v in {j["variant"] for j in jobs}:
            res = merge([p for p in parts if p["variant"] == v])
            out = write_json(flow.layout.sim(v, simulator) / "result.json", res)
            record_stage(flow.run_dir, f"sim:{simulator}:{v}", keys[v], [out])
            results[v] = res
    for v in variants:
        _record_sim(flow, v, simulator, results[v], cached=v in cached)
    return results


def check_verilog(flow, variant: str, rtl_dir: Path, images: int, work_dir: Path, workers: int = 1) -> dict:
    """Another Verilog of ``variant`` (``rtl_dir``: its ``prunehw_top.v`` and ``accelerator.json``, such as the one
    built for a device short of multipliers) under cocotb in Verilator on the first ``images`` test images, with
    the checks of :func:`sim`: ``{"simulator", "match", "total", "counters_equal", "first_mismatch"}`` (every
    image's logits against the golden model; ``counters_equal``: every counter of every image against the
    analytic model). ``workers`` processes, each running an equal share of the images on one build; a missing
    Verilator raises ``SimulatorMissing``."""
    from prunehw.core.artifacts import read_json
    from prunehw.sim.regression import merge, run_jobs
    from prunehw.sim.runner import SimulatorMissing, simulator_missing

    reason = simulator_missing("verilator")
    if reason:
        raise SimulatorMissing(reason)
    n = min(images, len(flow.data.x_test))
    shards = max(1, min(workers, n // 50))
    bounds = np.linspace(0, n, shards + 1).astype(int)
    res = merge(run_jobs([_job(flow, variant, "verilator", rtl_dir, Path(work_dir), sim_images(flow), int(bounds[s]),
                               int(bounds[s + 1]), n, s) for s in range(shards)], workers))
    desc = read_json(Path(rtl_dir) / "accelerator.json")
    counters = [dict(zip(desc["counters"], c)) for c in res["counters"]]
    cycles, activity = _against_model(desc, counters)
    return {"simulator": "verilator", "match": res["match"], "total": res["total"],
            "counters_equal": bool(counters) and cycles and activity, "first_mismatch": res["first_mismatch"]}


def _job(flow, variant: str, simulator: str, rtl_dir: Path, folder: Path, images: Path, start: int, stop: int,
         n_build: int, shard: int = 0, waves: bool = False):
    """The simulation job of test images ``start``..``stop`` (of the file ``images``) on ``variant``'s Verilog in
    ``rtl_dir`` (its ``accelerator.json`` beside it), built once in ``folder/build`` for ``n_build`` images, run
    in ``folder/shard<shard>``."""
    from prunehw.sim.regression import Job

    return Job(variant=variant, simulator=simulator, start=start, stop=stop, images=str(images),
               contract=str(flow.quantize(variant)), desc=str(Path(rtl_dir) / "accelerator.json"),
               rtl_dir=str(rtl_dir), build_dir=str(folder / "build"), n_build=n_build,
               work_dir=str(folder / f"shard{shard}"), waves=waves)


def _against_model(desc: dict, counters: list[dict]) -> tuple[bool, bool]:
    """(cycles, activity): whether every image's cycle counters (the total and each op's) equal the analytic
    model's, and whether every image's activity counters equal it (false where the description has no activity
    model)."""
    from prunehw.hw.host.counters import COUNTERS

    analytic, want = desc["cycles_analytic"], desc.get("activity_analytic", {})
    ops = [o["name"] for o in desc["ops"]]
    cycles = all(c["total_cycles"] == analytic["total"] and all(c[f"cycles_{o}"] == analytic["per_op"][o] for o in ops)
                 for c in counters)
    return cycles, bool(want) and all(c[k] == want.get(k) for c in counters for k in COUNTERS)


def sim_images(flow) -> Path:
    """``sim_images.npz``: the run's current test images, which the RTL simulations read.

    Rewritten whenever it differs from the current test set, so a changed
    data config never leaves the RTL running on the old images.
    """
    img_path = flow.layout.sim_images
    if not img_path.is_file() or not np.array_equal(np.load(img_path)["x"], flow.data.x_test):
        from prunehw.core.artifacts import atomic_path

        with atomic_path(img_path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, x=flow.data.x_test)
    return img_path


def _record_sim(flow, variant: str, simulator: str, res: dict, cached: bool = False) -> None:
    from prunehw.core.artifacts import read_json
    from prunehw.hw.host.counters import COUNTERS

    desc = read_json(flow.layout.accelerator(variant))
    ops = [o["name"] for o in desc["ops"]]
    counters = [dict(zip(desc["counters"], c)) for c in res["counters"]]    # (the host port's names)
    y = flow.data.y_test[res["images"]]
    acc = float(np.mean(np.argmax(np.array(res["logits"]), axis=1) == y)) if res["logits"] else None
    tag = f"rtl_{simulator}"
    entry: dict = {"bitexact": {tag: {"match": res["match"], "total": res["total"]}},
                   "accuracy": {tag: acc, "images": {tag: len(res["images"])}}}
    if res["first_mismatch"]:
        entry["bitexact"][tag]["first_mismatch"] = res["first_mismatch"]
    if counters:
        first = counters[0]
        same = all(c == first for c in counters)
        analytic = desc["cycles_analytic"]
        cycles, activity = _against_model(desc, counters)
        entry["cycles"] = {
            "rtl": first["total_cycles"],
            "rtl_equals_analytic": same and cycles,
            "per_layer": merge_layers(flow, variant, [{"layer": o, "analytic": analytic["per_op"][o],
                                                       "rtl": first[f"cycles_{o}"]} for o in ops]),
        }
        # clock cycles from one start to the next in the testbench: serial (load after read-out) and
        # overlapped (the next image loaded into the free slot during the inference); medians
        gaps = res.get("intervals", {})
        if gaps.get("serial") and gaps.get("overlapped"):
            entry["cycles"]["interval"] = {k: int(np.median(gaps[k])) for k in ("serial", "overlapped")}
        R, C = desc["array"]["rows"], desc["array"]["cols"]
        entry["pe_utilization"] = first["macs"] / (first["total_cycles"] * R * C)
        entry["activity"] = {k: first[k] for k in COUNTERS}
        # every image's every activity counter (memory ports, array) against the analytic model
        entry["activity_equals_analytic"] = activity
    update_variant(flow.run_dir, variant, entry, replace=("activity",))
    cyc = entry.get("cycles", {})
    acc_text = f"{acc:.4f}" if acc is not None else "not measured"
    flow.log(f"sim {simulator} {variant}: {'up to date, ' if cached else ''}{res['match']}/{res['total']} images "
             f"bit-exact with the golden model, "
             f"RTL accuracy {acc_text}, {cyc.get('rtl')} cycles/image "
             f"({'equal to' if cyc.get('rtl_equals_analytic') else 'DIFFERENT from'} the analytic model; activity "
             f"counters {'equal to' if entry.get('activity_equals_analytic') else 'DIFFERENT from'} it on every image)")
    if res["first_mismatch"]:
        flow.log(f"sim {simulator} {variant}: first mismatch: {res['first_mismatch']}")

