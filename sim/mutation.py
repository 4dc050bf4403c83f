"""The mutation campaign: build each single fault of ``hw.faults`` into a copy of a variant's RTL, run the
cocotb regression on a fixed image subset, and record whether and how the fault was caught.

A fault is caught when, on some image, the logits differ from the golden
model's or a counter (cycles, per-op cycles, memory and array activity)
differs from the analytic model. Every fault must
be caught; one that is not shows a hole in the test set.
"""

from __future__ import annotations

import csv
from pathlib import Path

from prunehw.core.artifacts import atomic_path, write_json
from prunehw.hw.accelerator import COUNTERS, Accelerator
from prunehw.hw.cycle_model import activity_model, cycle_model
from prunehw.hw.faults import FAULTS
from prunehw.hw.generate import describe, write_verilog
from prunehw.sim.regression import Job, run_jobs

__all__ = ["run_campaign"]


def _mutant(program, fault: str, out_dir: Path) -> Path:
    top = Accelerator(program, fault=fault)
    write_verilog(top, out_dir)
    write_json(out_dir / "accelerator.json", describe(program, top))
    return out_dir


def run_campaign(program, contract_path: Path, images_npz: Path, n_images: int, out_dir: Path, simulator: str = "verilator",
                 workers: int = 2, faults: list[str] | None = None, log=print) -> list[dict]:
    """Run the campaign; writes ``mutations.csv`` in ``out_dir`` and returns its rows."""
    from tqdm.auto import tqdm

    names = faults or list(FAULTS)
    unknown = [f for f in names if f not in FAULTS]
    if unknown:
        from prunehw.core.errors import ConfigError

        raise ConfigError(f"fault {unknown[0]!r} is unknown; allowed: {', '.join(FAULTS)}")
    model, activity = cycle_model(program), activity_model(program)
    expected = [activity[k] for k in COUNTERS] + [model.per_op[o.name] for o in program.ops]
    jobs = []
    for f in tqdm(names, desc="generating mutants", unit="mutant"):
        rtl = _mutant(program, f, Path(out_dir) / f / "rtl")
        jobs.append(Job(variant=f, simulator=simulator, start=0, stop=n_images, images=str(images_npz),
                        contract=str(contract_path), desc=str(rtl / "accelerator.json"), rtl_dir=str(rtl),
                        work_dir=str(Path(out_dir) / f / "sim")))
    bar = tqdm(total=len(jobs), desc="mutants simulated", unit="mutant")
    results = run_jobs(jobs, workers, progress=lambda r: bar.update(1))
    bar.close()
    rows = []
    for f, r in zip(names, results):
        first_logit = r["first_mismatch"]["image"] if r["first_mismatch"] else None
        first_counters = next((img for img, c in zip(r["images"], r["counters"]) if c is None or list(c) != expected), None)
        kind = "timeout" if r["first_mismatch"] and r["first_mismatch"].get("timeout") else "logits"
        by = [k for k, v in ((kind, first_logit), ("counters", first_counters)) if v is not None]
        firsts = [v for v in (first_logit, first_counters) if v is not None]
        rows.append({"fault": f, "description": FAULTS[f].description, "caught": bool(by), "caught_by": "+".join(by) or "-",
                     "first_image": min(firsts) if firsts else "-", "images_bit_exact": f"{r['match']}/{r['total']}"})
    with atomic_path(Path(out_dir) / "mutations.csv") as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    caught = sum(r["caught"] for r in rows)
    width = max(len(r["fault"]) for r in rows)
    log(f"mutation campaign ({simulator}, {n_images} images per mutant): caught {caught}/{len(rows)}")
    for r in rows:
        log(f"  {r['fault']:<{width}}  {'caught' if r['caught'] else 'MISSED':<7} by {r['caught_by']:<13} "
            f"first image {r['first_image']!s:<4} bit-exact {r['images_bit_exact']:<7} {r['description']}")
    return rows
