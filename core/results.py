"""The names of ``summary.json``, declared once: its sections, and the figures of a variant's entry under
``variants``. Every write goes through :func:`~prunehw.core.artifacts.update_summary` or
:func:`~prunehw.core.artifacts.update_variant`, which refuse a name not declared here, so a misspelt figure
fails where it is written instead of appearing as a new, unread key.
"""

from __future__ import annotations

from prunehw.core.errors import PrunehwError

__all__ = ["SUMMARY_SECTIONS", "VARIANT_FIELDS", "check_names"]

#: the top level of ``summary.json``
SUMMARY_SECTIONS = {
    "train": "how the dense network was made: training seconds and epochs, or the imported file and its rewrites",
    "variants": "one entry per variant (VARIANT_FIELDS)",
    "savings_vs_dense": "ratios of each variant's storage, energy and cycles to the dense network's",
    "mutation": "per variant: faults caught of those applicable, the stimulus and its event coverage",
    "experiments": "the report's claims: reproduced or not",
    "explore": "per sweep: points, Pareto fronts, the benchmark",
}

#: a variant's figures (DESIGN §8); nested values are the stage's own records
VARIANT_FIELDS = {
    "method": "dense, unstructured or matrix", "schedule": "oneshot or iterative", "criterion": "the saliency",
    "ratio_requested": "the fraction of weights asked to be removed",
    "target_cycles": "a hardware target pruned to", "target_energy_uj": "a hardware target pruned to",
    "target_images_per_s": "a hardware target pruned to",
    "target_cycles_for_rate": "the cycle target of target_images_per_s", "target_clock_mhz": "the clock it is at",
    "ratio_measured": "the fraction of weights removed", "weights_total": "weights of the dense network",
    "weights_kept": "non-zero weights kept", "pruned_as": "the variant whose pruned model this one shares",
    "accuracy": "test accuracy per model (float, quant, hls, rtl_<simulator>) and its image counts",
    "quant": "ptq or qat", "weight_bits": "the widest weight width", "act_bits": "activation width",
    "bits": "per layer: weight and activation widths", "bit_allocation": "the per-layer width search",
    "bitexact": "per check (hls, rtl_<simulator>): images equal to the golden model, of those run",
    "cycles": "per image: rtl, analytic, scalesim, per layer, intervals", "array": "the array's size",
    "pe_utilization": "MACs over PE-cycles", "activity": "the RTL's event counters on one image",
    "activity_equals_analytic": "every counter on every image equal to the analytic model",
    "storage_bytes": "keras, savedmodel, gzip, csr, packed", "energy_pj": "total and its parts",
    "energy_table": "the energy table's source", "energy_gating_saved_pj": "what zero-weight gating saved",
    "synth": "synthesis and place-and-route on the device",
    "devices": "per part of the device table: its synthesis entry, or why it cannot hold the design",
    "smallest_device": "the part with the fewest LUTs the design was placed on, its clock met", "board": "the board core: its simulations, bitstream, run",
}


def check_names(entries: dict, allowed: dict, where: str) -> None:
    """Refuse, in one line, a name of ``entries`` that ``allowed`` does not declare."""
    unknown = sorted(set(entries) - set(allowed))
    if unknown:
        raise PrunehwError(f"{where}: {', '.join(map(repr, unknown))} is not a declared summary.json name; "
                           f"allowed: {', '.join(allowed)} (prunehw.core.results)")
