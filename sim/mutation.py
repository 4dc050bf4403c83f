"""The mutation campaign: build the single faults of ``hw.faults`` into copies of a variant's RTL, run the cocotb
regression on a fixed image subset with each fault switched on, and record whether and how it was caught.

A fault is caught when, on some image, the logits differ from the golden
model's or a counter (cycles, per-op cycles, memory and array activity)
differs from the analytic model. Every fault must be caught; one that is
not shows a hole in the test set.

Builds: most faults change a value the design computes, and these all go
into ONE shared build behind a ``fault_select`` input
(:class:`~prunehw.sim.faults.SelectTaps`), run once per fault, plus once with
no fault as the control (which must be bit-exact, else the campaign is void).
A fault that changes the design's structure (a register chain's depth, a
constant index) gets a build of its own (:class:`~prunehw.sim.faults.FaultTaps`).
One Verilator build per variant instead of one per fault is what lets the
campaign run on every variant.
"""

from __future__ import annotations

from pathlib import Path

from prunehw.core.artifacts import write_csv, write_json
from prunehw.hw.gateware.accelerator import Accelerator
from prunehw.hw.models.cycle_model import expected_counters
from prunehw.sim.faults import FAULTS, FaultTaps, SelectTaps
from prunehw.hw.generate import describe, write_verilog
from prunehw.sim.regression import Job, run_jobs

__all__ = ["run_campaign"]


def _build(program, taps, out_dir: Path) -> dict:
    """Write the design with ``taps`` into ``out_dir``; returns its description (also written beside it)."""
    top = Accelerator(program=program, taps=taps)
    write_verilog(top, out_dir)
    desc = describe(program, top)
    if isinstance(taps, SelectTaps):
        desc["fault_select"] = {"bits": len(top.fault_select), "faults": {n: taps.index(n) for n in taps.selectable}}
    write_json(out_dir / "accelerator.json", desc)
    return desc


def run_campaign(program, contract_path: Path, images_npz: Path, n_images: int, out_dir: Path, simulator: str = "verilator",
                 workers: int = 2, faults: list[str] | None = None, log=print) -> list[dict]:
    """Run the campaign; writes ``mutations.csv`` in ``out_dir`` and returns its rows."""
    from tqdm.auto import tqdm

    names = faults or list(FAULTS)
    unknown = [f for f in names if f not in FAULTS]
    if unknown:
        from prunehw.core.errors import ConfigError

        raise ConfigError(f"fault {unknown[0]!r} is unknown; allowed: {', '.join(FAULTS)}")
    out_dir = Path(out_dir)
    # a fault whose target the design does not have is equivalent to it by construction: reported, not run
    absent = {f: why for f in names if (why := FAULTS[f].absent(program))}
    names = [f for f in names if f not in absent]
    expected = expected_counters(program)
    common = {"simulator": simulator, "start": 0, "stop": n_images, "n_build": n_images, "images": str(images_npz),
              "contract": str(contract_path)}

    shared = SelectTaps(names)
    _build(program, shared, out_dir / "shared" / "rtl")
    alone = [f for f in names if f in shared.static]
    selects = [0] + [shared.index(f) for f in shared.selectable]
    # the shared build's runs (the control, then one per fault) split over the workers
    chunks = [selects[i::max(1, workers)] for i in range(max(1, workers))]
    jobs = [Job(variant="shared", selects=chunk, desc=str(out_dir / "shared" / "rtl" / "accelerator.json"),
                rtl_dir=str(out_dir / "shared" / "rtl"), build_dir=str(out_dir / "shared" / "build"),
                work_dir=str(out_dir / "shared" / f"sim{i}"), **common) for i, chunk in enumerate(chunks) if chunk]
    for f in tqdm(alone, desc="structural mutants", unit="mutant"):
        _build(program, FaultTaps(f), out_dir / f / "rtl")
        jobs.append(Job(variant=f, desc=str(out_dir / f / "rtl" / "accelerator.json"), rtl_dir=str(out_dir / f / "rtl"),
                        build_dir=str(out_dir / f / "build"), work_dir=str(out_dir / f / "sim"), **common))
    log(f"mutation campaign: {len(shared.selectable)} faults in one shared build (fault_select), "
        f"{len(alone)} structural ones built alone ({', '.join(alone) or 'none'})")
    bar = tqdm(total=len(jobs), desc="mutant builds simulated", unit="build")
    done = run_jobs(jobs, workers, progress=lambda r: bar.update(1))
    bar.close()

    n_shared = sum(1 for j in jobs if j["variant"] == "shared")
    by_select = {s: r for j, d in zip(jobs[:n_shared], done) for s, r in zip(j["selects"], d["runs"])}
    control, runs = by_select[0], [by_select[shared.index(f)] for f in shared.selectable]
    if control["match"] != control["total"] or any(list(c) != expected for c in control["counters"]):
        raise RuntimeError(f"the campaign's shared build with no fault switched on is not bit-exact with the golden model "
                           f"and the analytic counters ({control['match']}/{control['total']} images, first mismatch "
                           f"{control['first_mismatch']}): the campaign would prove nothing")
    result = {**dict(zip(shared.selectable, runs)), **dict(zip(alone, done[n_shared:]))}
    rows = []
    for f in names:
        r = result[f]
        first_logit = r["first_mismatch"]["image"] if r["first_mismatch"] else None
        first_counters = next((img for img, c in zip(r["images"], r["counters"]) if c is None or list(c) != expected), None)
        kind = "timeout" if r["first_mismatch"] and r["first_mismatch"].get("timeout") else "logits"
        by = [k for k, v in ((kind, first_logit), ("counters", first_counters)) if v is not None]
        firsts = [v for v in (first_logit, first_counters) if v is not None]
        rows.append({"fault": f, "description": FAULTS[f].description, "caught": bool(by), "caught_by": "+".join(by) or "-",
                     "first_image": min(firsts) if firsts else "-", "images_bit_exact": f"{r['match']}/{r['total']}",
                     "build": "own" if f in alone else "shared"})
    rows += [{"fault": f, "description": FAULTS[f].description, "caught": "n/a", "caught_by": f"not applicable: {why}",
              "first_image": "-", "images_bit_exact": "-", "build": "-"} for f, why in absent.items()]
    write_csv(out_dir / "mutations.csv", rows)
    caught = sum(r["caught"] is True for r in rows)
    width = max(len(r["fault"]) for r in rows)
    log(f"mutation campaign ({simulator}, {n_images} images per mutant): caught {caught}/{len(rows) - len(absent)}"
        + (f" ({len(absent)} not applicable to this design)" if absent else "") + "; the shared build "
        f"with no fault: {control['match']}/{control['total']} bit-exact, counters equal to the model")
    for r in rows:
        status = "n/a" if r["caught"] == "n/a" else "caught" if r["caught"] else "MISSED"
        log(f"  {r['fault']:<{width}}  {status:<7} by {r['caught_by']:<13} "
            f"first image {r['first_image']!s:<4} bit-exact {r['images_bit_exact']:<7} {r['description']}")
    return rows
