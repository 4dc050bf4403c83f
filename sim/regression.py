"""Run a variant's RTL on a set of test images in one simulator, sharded over worker processes.

Two phases: every distinct build (a variant's design with its images in the harness) is built once, the builds
in parallel; then every job (a shard of the images, or a fault selection of the mutation campaign) runs on its
build, the jobs in parallel. Shards of one variant share its build.
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from prunehw.sim.runner import Build, SimResult, build_rtl, run_built

__all__ = ["Job", "run_jobs", "merge"]


class Job(dict):
    """One simulator run as plain data: ``variant``, ``simulator``, the images ``start .. stop - 1`` of the npz
    ``images`` (checked against the golden model of ``contract``), the design (``rtl_dir``, ``desc``), the shared
    build's folder ``build_dir`` holding images ``0 .. n_build - 1``, its own folder ``work_dir``; optionally
    ``selects`` (fault selections, one run each) and ``waves``."""


def _build(job: Job) -> Build | str:
    """The job's build (the first job naming a ``build_dir`` builds it); on failure the reason, as text."""
    images = np.load(job["images"])["x"][:job["n_build"]]
    desc = json.loads(Path(job["desc"]).read_text())
    try:
        return build_rtl(Path(job["rtl_dir"]), desc, images, job["simulator"], Path(job["build_dir"]),
                         waves=job.get("waves", False))
    except RuntimeError as exc:
        return str(exc)


def _run(job: Job, build: Build | str) -> dict:
    """Run one job on its build; a job with ``selects`` returns ``{"runs": [...]}``, one result per selection."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from prunehw.export.contract import load_contract
    from prunehw.export.golden import golden

    ids = list(range(job["start"], job["stop"]))
    selects = job.get("selects", [None])
    if isinstance(build, str):   # the build failed: no image ran, none matches
        failed = {"variant": job["variant"], "simulator": job["simulator"], "images": [], "match": 0, "total": len(ids),
                  "logits": [], "counters": [], "first_mismatch": {"image": ids[0], "error": build}, "seconds": 0.0,
                  "intervals": {"serial": [], "overlapped": []}}
        runs = [failed] * len(selects)
    else:
        images = np.load(job["images"])["x"][job["start"]:job["stop"]]
        expected = golden(load_contract(job["contract"]), images)
        work = Path(job["work_dir"])
        runs = [_as_dict(job, run_built(build, expected, work if s is None else work / f"select{s}", first=job["start"],
                                        select=s, image_ids=ids, waves=job.get("waves", False)))
                for s in selects]
    return {"variant": job["variant"], "runs": runs} if "selects" in job else runs[0]


def _as_dict(job: Job, r: SimResult) -> dict:
    return {"variant": job["variant"], "simulator": r.simulator, "images": r.images, "match": r.match, "total": r.total,
            "logits": r.logits.tolist(), "counters": r.counters, "first_mismatch": r.first_mismatch, "seconds": r.seconds,
            "intervals": r.intervals}


def run_jobs(jobs: list[Job], workers: int, progress=None) -> list[dict]:
    """Build what ``jobs`` need, then run them, in ``workers`` processes; results in job order."""
    import multiprocessing as mp

    builds = {}
    for j in jobs:
        builds.setdefault(j["build_dir"], j)
    if workers <= 1 or len(jobs) == 1:
        built = {d: _build(j) for d, j in builds.items()}
        out = []
        for j in jobs:
            out.append(_run(j, built[j["build_dir"]]))
            if progress:
                progress(out[-1])
        return out
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        built = dict(zip(builds, pool.map(_build, builds.values())))
        futures = [pool.submit(_run, j, built[j["build_dir"]]) for j in jobs]
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
