"""The ``mutate`` stage: single-fault mutants of a variant's accelerator on a stimulus chosen by coverage, each
fault caught or missed, every layer event reached, proven unreachable or reported undecided."""

from __future__ import annotations

import numpy as np

__all__ = ["mutate"]


def mutate(flow, variant: str, images: int, workers: int = 2, faults: list[str] | None = None) -> list[dict]:
    """Single-fault mutants of ``variant``'s accelerator, each run on the first ``images`` test images."""
    from prunehw.core.artifacts import atomic_path, update_summary
    from prunehw.export.contract import load_contract
    from prunehw.hw.generate import program_for
    from prunehw.sim.mutation import run_campaign
    from prunehw.sim.runner import SimulatorMissing, simulator_missing

    reason = simulator_missing("verilator")
    if reason:
        raise SimulatorMissing(reason)
    contract_path = flow.quantize(variant)
    contract = load_contract(contract_path)
    program = program_for(contract, flow.cfg.array)
    # the stimulus is chosen by coverage: the first test images, then test images and searched inputs until
    # every arithmetic event of every layer happens (what cannot happen is reported, not counted), plus two
    # extreme images (all white; a checkerboard: every lane and sign)
    from prunehw.core.artifacts import write_csv
    from prunehw.sim.stimulus import choose_stimulus

    x, coverage = choose_stimulus(contract, flow.data.x_test, images, seed=flow.cfg.seed)
    white = np.full_like(x[:1], 255)
    checker = (np.indices(x.shape[1:3]).sum(axis=0) % 2 * 255).astype(np.uint8).reshape(1, *x.shape[1:3], 1)
    x = np.concatenate([x, white, np.broadcast_to(checker, white.shape)])
    write_csv(flow.layout.mutate(variant) / "coverage.csv", coverage)
    reached = [r for r in coverage if r["status"] == "reached"]
    holes = [r for r in coverage if r["status"] == "undecided"]
    proven = [r for r in coverage if r["status"] == "unreachable"]
    unreachable = [r["event"] for r in proven]
    flow.log(f"mutate {variant}: {len(x)} stimulus images reach {len(reached)}/{len(coverage)} layer events"
             + (f"; proven unreachable: {', '.join(unreachable)}" if unreachable else "")
             + ("; UNDECIDED, neither reached nor proven unreachable (closest image / bound, of the threshold): "
                + ", ".join(f"{r['event']} ({r['closest']:.1%} / {r['bound']:.1%})" for r in holes) if holes else "")
             + f" ({flow.layout.mutate(variant) / 'coverage.csv'})")
    img_path = flow.layout.mutate() / "images.npz"
    with atomic_path(img_path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, x=x)
    rows = run_campaign(program, contract_path, img_path, len(x), flow.layout.mutate(variant),
                        workers=workers, faults=faults, log=flow.log)
    update_summary(flow.run_dir, {"mutation": {variant: {
        "caught": sum(r["caught"] is True for r in rows), "total": sum(r["caught"] != "n/a" for r in rows),
        "not_applicable": [r["fault"] for r in rows if r["caught"] == "n/a"], "images": len(x),
        "coverage": {"events": len(coverage), "covered": len(reached), "not_reached": [r["event"] for r in holes],
                     "unreachable": unreachable,
                     # per event: reached by which stimulus image, or proven unreachable by which bound
                     "reached_by": {r["event"]: r["first_stimulus_image"] for r in reached},
                     "unreachable_by": {r["event"]: r["bound_by"] for r in proven},
                     # for each undecided event: the closest image and the bound, of its threshold
                     "not_reached_closest": {r["event"]: r["closest"] for r in holes},
                     "not_reached_bound": {r["event"]: r["bound"] for r in holes}}}}})
    return rows


