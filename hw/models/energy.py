"""Energy per inference of the accelerator: every counter of the RTL times the per-operation energy of a table
that states its source (``energy_horowitz45.json`` beside this module by default).

Each multiply the PEs did (zero weights are gated and not multiplied) is an 8-bit multiply (scaled by the weight
width, see :func:`energy`), each PE beat an accumulator add; an SRAM access is charged per bit moved at the 64-bit
access energy of the smallest SRAM size in the table that holds that memory (:func:`sram_pj_per_bit`), with the
word widths of this accelerator (a weight read is a whole R x C tile at the packed weight width; an activation
word has the hidden layers' lane width, an image word bytes; a word is written to each of the R replicated banks,
each its own memory and each write counted).
"""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

__all__ = ["DEFAULT_ENERGY_TABLE", "energy", "gating_saved_pj", "load_energy_table", "memory_bytes", "sram_pj_per_bit"]

# package data of prunehw.hw, found through the import system (an installed copy has no source tree)
DEFAULT_ENERGY_TABLE = Path(str(importlib.resources.files("prunehw.hw.models") / "energy_horowitz45.json"))


def load_energy_table(path: Path | None = None) -> dict:
    path = Path(path or DEFAULT_ENERGY_TABLE)
    table = json.loads(path.read_text())
    for key in ("source", "mult_int8_pj", "add_int32_pj", "sram_64bit_access_pj"):
        if key not in table:
            from prunehw.core.errors import ConfigError

            raise ConfigError(f"energy table {path} lacks {key!r}")
    return table


def sram_pj_per_bit(table: dict, size_bytes: int) -> float:
    """pJ per bit moved by one access of an SRAM of ``size_bytes``: the 64-bit access energy of the smallest
    tabulated SRAM at least that large, over 64 (the largest tabulated one beyond them all)."""
    sizes = sorted((int(k), float(v)) for k, v in table["sram_64bit_access_pj"].items())
    for cap, pj in sizes:
        if size_bytes <= cap:
            return pj / 64.0
    return sizes[-1][1] / 64.0


def memory_bytes(desc: dict) -> dict[str, int]:
    """Bytes of one physical memory of each kind (one activation bank, not all of them), from the description."""
    mem = desc["memories"]
    bits = lambda m: m["words"] * m["bits_per_word"] // 8  # noqa: E731
    act = mem["activations"]
    return {"weights": mem["weights"]["bytes"], "activations": max(act["buffers"][:2]) * act["bits_per_word"] // 8,
            "image": act["buffers"][2] * act["image_bits_per_word"] // 8,
            "psum": bits(mem["psum"]), "bias": bits(mem["bias"]), "row_table": bits(mem["row_table"])}


def energy(activity: dict[str, int], desc: dict, table: dict) -> dict[str, float]:
    """pJ per inference by component, and ``total``, from RTL counters and the accelerator's word widths."""
    arr, mem = desc["array"], desc["memories"]
    acc, C = arr["acc_bits"], arr["cols"]
    act = mem["activations"]
    per_bit = {k: sram_pj_per_bit(table, b) for k, b in memory_bytes(desc).items()}
    # every PE adds on every beat; it multiplies only when its weight is not zero (counted at the PEs;
    # counters from before gating have only ``macs``). A multiplier narrower than 8 x 8 bits is charged the
    # 8-bit figure scaled by its partial-product bits (w x x over 8 x 8: the table's own 8- and 32-bit
    # multiplies, 0.2 and 3.1 pJ, scale so); the activation operand is 9 bits (a byte and its sign) and
    # counted as 8
    scale = min(arr.get("weight_bits", 8), 8) * min(arr.get("x_bits", 9) - 1, 8) / 64
    mults = activity.get("mults", activity["macs"])
    parts = {
        "multiply": mults * table["mult_int8_pj"] * scale,
        "accumulate": (mults + activity.get("mults_gated", 0)) * table["add_int32_pj"],
        # (the bits the weight ROMs' reads moved, counted at their ports; all ROMs charged as one memory of their size)
        "weight_sram": activity["weight_bits_read"] * per_bit["weights"],
        "activation_sram_read": activity["act_reads"] * act["bits_per_word"] * per_bit["activations"]
        + activity.get("image_reads", 0) * act["image_bits_per_word"] * per_bit["image"],
        "activation_sram_write": activity["act_writes"] * act["bits_per_word"] * per_bit["activations"],
        "psum_sram": (activity["psum_reads"] + activity["psum_writes"]) * C * acc * per_bit["psum"],
        "bias_sram": activity["bias_reads"] * C * acc * per_bit["bias"],
        "row_table_sram": activity.get("table_reads", 0) * desc["memories"]["row_table"]["bits_per_word"] * per_bit["row_table"],
    }
    if "reg_8bit_write_pj" in table and "wreg_writes" in activity:   # (Horowitz gives no register figure)
        parts["weight_registers"] = activity["wreg_writes"] * table["reg_8bit_write_pj"]
    parts["total"] = sum(parts.values())
    return parts


def gating_saved_pj(activity: dict[str, int], table: dict) -> float | None:
    """Multiplier energy zero-weight gating avoided (the gated multiplies at the table's price); None when not counted."""
    if "mults_gated" not in activity:
        return None
    return activity["mults_gated"] * table["mult_int8_pj"]
