"""The ``report`` stage: storage and energy per variant from the run's files and RTL counters; the savings CSV
and plots, the synthesis table, ``report.md``. It always runs (it only reads what the other stages wrote)."""

from __future__ import annotations

from pathlib import Path

from prunehw.core.artifacts import read_json, update_variant, write_bytes

__all__ = ["report"]


def report(flow, energy_table: Path | None = None) -> Path:
    """Storage and energy per variant from this run's files and RTL counters; CSV, PNGs, report.md."""
    from prunehw.report import format_report, write_savings
    from prunehw.hw.models.energy import energy, gating_saved_pj, load_energy_table
    from prunehw.savings import storage
    from prunehw.synth_report import write_synth_files

    run_dir, layout = flow.run_dir, flow.layout
    table = load_energy_table(energy_table)
    for v in flow.variant_names():
        if not flow.model_path(v).is_file():
            # (a command given --variant made the others' stages no further: nothing of theirs to report yet)
            flow.log(f"report: {v} not made yet (prunehw prune and the later stages make it), left out")
            continue
        desc_path = layout.accelerator(v)
        desc = read_json(desc_path) if desc_path.is_file() else None
        entry: dict = {"storage_bytes": storage(flow.model_path(v), desc)}
        activity = read_json(layout.summary).get("variants", {}).get(v, {}).get("activity")
        if activity and desc:
            entry["energy_pj"] = energy(activity, desc, table)
            entry["energy_table"] = table["source"]
            saved = gating_saved_pj(activity, table)
            if saved is not None:
                entry["energy_gating_saved_pj"] = saved
        update_variant(run_dir, v, entry, replace=("energy_pj", "energy_gating_saved_pj"))
    paths = write_savings(run_dir) + write_synth_files(run_dir)
    text = format_report(run_dir)
    write_bytes(layout.report, ("```\n" + text + "\n```\n\n" + "\n".join(
        f"![{p.stem}]({p.relative_to(run_dir)})" for p in paths if p.suffix == ".png") + "\n").encode())
    flow.log(text)
    return layout.report
