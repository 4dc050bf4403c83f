"""Run a variant's RTL on a set of test images in one simulator, sharded over worker processes."""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from prunehw.sim.runner import SimResult, run_rtl_selects

__all__ = ["Job", "run_jobs", "merge"]


class Job(dict):
    """One simulator process: (variant, simulator, shard) with everything it needs as plain data."""


def _run(job: Job) -> dict:
    """Run one job; a job with ``selects`` (the mutation campaign's shared build) returns ``{"runs": [...]}``,
    one result per select value, from one build."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from prunehw.export.contract import load_contract
    from prunehw.export.golden import golden

    images = np.load(job["images"])["x"][job["start"]:job["stop"]]
    contract = load_contract(job["contract"])
    desc = json.loads(Path(job["desc"]).read_text())
    ids = list(range(job["start"], job["stop"]))
    selects = job.get("selects", [None])
    try:
        runs = [_as_dict(job, r) for r in run_rtl_selects(Path(job["rtl_dir"]), desc, images, golden(contract, images),
                                                          job["simulator"], Path(job["work_dir"]), selects, image_ids=ids,
                                                          waves=job.get("waves", False))]
    except RuntimeError as exc:  # the build or the simulator failed: no image ran, none matches
        failed = {"variant": job["variant"], "simulator": job["simulator"], "images": [], "match": 0, "total": len(ids),
                  "logits": [], "counters": [], "first_mismatch": {"image": ids[0], "error": str(exc)}, "seconds": 0.0,
                  "intervals": {"serial": [], "overlapped": []}}
        runs = [failed] * len(selects)
    return {"variant": job["variant"], "runs": runs} if "selects" in job else runs[0]


def _as_dict(job: Job, r: SimResult) -> dict:
    return {"variant": job["variant"], "simulator": r.simulator, "images": r.images, "match": r.match, "total": r.total,
            "logits": r.logits.tolist(), "counters": r.counters, "first_mismatch": r.first_mismatch, "seconds": r.seconds,
            "intervals": r.intervals}


def run_jobs(jobs: list[Job], workers: int, progress=None) -> list[dict]:
    """Run ``jobs`` in ``workers`` processes (one simulator each); results in job order."""
    import multiprocessing as mp

    if workers <= 1 or len(jobs) == 1:
        out = []
        for j in jobs:
            out.append(_run(j))
            if progress:
                progress(out[-1])
        return out
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_run, j) for j in jobs]
        out = []
        for f in futures:
            out.append(f.result())
            if progress:
                progress(out[-1])
        return out


def merge(parts: list[dict]) -> dict:
    """One variant/simulator's shards merged: counts, first mismatch, logits and counters in image order."""
    parts = sorted(parts, key=lambda p: p["images"][0] if p["images"] else p["first_mismatch"]["image"])
    mism = [p["first_mismatch"] for p in parts if p["first_mismatch"]]
    return {
        "images": [i for p in parts for i in p["images"]],
        "match": sum(p["match"] for p in parts), "total": sum(p["total"] for p in parts),
        "logits": [l for p in parts for l in p["logits"]], "counters": [c for p in parts for c in p["counters"]],
        "first_mismatch": mism[0] if mism else None, "seconds": sum(p["seconds"] for p in parts),
        "intervals": {k: [g for p in parts for g in p.get("intervals", {}).get(k, [])] for k in ("serial", "overlapped")},
    }
