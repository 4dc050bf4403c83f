"""The iCE40 UltraPlus flavour of the generated design, and the check that a design fits such a part.

The same Amaranth description as the ECP5's (:mod:`prunehw.hw.target.ecp5`), elaborated with :class:`ICE40` as its
``platform``, which changes two things:

- **No multiplier primitive is instantiated.** Each PE multiplies with plain Amaranth arithmetic into its product
  register; ``synth_ice40 -dsp`` maps such a multiply onto an ``SB_MAC16`` while the part has them, and into LUTs
  and carry chains beyond that. The Verilog therefore needs no simulation model of a vendor primitive.
- **The activation buffers and the image slots live in single-port RAM** (``SB_SPRAM256KA``, 16 bits x 16,384
  words, four on the UP5K; :class:`~prunehw.hw.gateware.block_ram.BlockRAM` with ``single_port``). The part's
  block RAM (30 ``SB_RAM40_4K`` of 4 kbit) is left to what needs initial contents or two ports: the weight ROM,
  the bias ROM and the partial sums. The SPRAM has no initial contents, and the Verilog says so (no initial
  block), so the simulated design is the synthesised one.

:func:`memory_map` says where each memory of an accelerator goes and how many blocks it takes, the way yosys
0.23's ``memory_libmap`` maps them (the cheapest of the block RAM's four shapes, 256 x 16 to 2,048 x 2; a
single-port RAM in whole SPRAMs); :func:`fit_problem` compares the totals with the part's before any tool runs.
"""

from __future__ import annotations

from math import ceil

__all__ = ["EBR_SHAPES", "ICE40", "SPRAM_DEPTH", "SPRAM_WIDTH", "ebr_blocks", "fit_problem", "memory_map"]

#: (width, depth) shapes of an iCE40 ``SB_RAM40_4K`` (iCE40 sysMEM usage guide, TN1250).
EBR_SHAPES = ((16, 256), (8, 512), (4, 1024), (2, 2048))
#: One ``SB_SPRAM256KA``: 16 bits x 16,384 words.
SPRAM_WIDTH, SPRAM_DEPTH = 16, 16384


class ICE40:
    """The ``platform`` handed to ``elaborate`` for the iCE40 UltraPlus flavour (see the module docstring): a
    marker, the design being synthesised out of context. ``device`` names the part."""

    #: the accelerator keeps its activation buffers and image slots in single-port RAM
    single_port_buffers = True

    def __init__(self, device: str = "iCE40UP5K"):
        self.device = device


def ebr_blocks(width: int, depth: int) -> int:
    """``SB_RAM40_4K`` blocks of a ``width`` x ``depth`` memory: its cheapest shape."""
    return min(ceil(width / w) * ceil(depth / d) for w, d in EBR_SHAPES)


def memory_map(accel) -> dict[str, tuple[str, int]]:
    """{memory: (where, blocks)} of an :class:`~prunehw.hw.gateware.accelerator.Accelerator` on an iCE40 UltraPlus:
    ``"ebr"`` (block RAM blocks), ``"spram"`` (SPRAMs) or ``"logic"`` (the row table, which the feeder reads
    combinationally: LUTs)."""
    from prunehw.hw.gateware.block_ram import BlockRAM

    plan, R, C = accel.plan, accel.R, accel.C
    out = {f"feeder.{plan.wrom_names[b]}": ("ebr", ebr_blocks(R * C * b, len(plan.wimgs[b]))) for b in plan.wwidths}
    out["feeder.rtrom"] = ("logic", 0)
    out["writeback.brom"] = ("ebr", ebr_blocks(C * accel.ACC, len(plan.bimg)))
    for name, (width, depth, granularity) in accel.ram_specs().items():
        if name == "writeback.psum":      # (two ports: the partial sums are read and written in the same cycle)
            out[name] = ("ebr", sum(ebr_blocks(w, d) for w, d in BlockRAM.split(width, depth, granularity).values()))
        else:
            parts = 2 if name.startswith("img") else 1
            out[name] = ("spram", parts * ceil(width / SPRAM_WIDTH) * ceil(depth // parts / SPRAM_DEPTH))
    return out


def fit_problem(dev, accel) -> str | None:
    """One line saying what the iCE40 part ``dev`` lacks for ``accel`` on its array (block RAM, SPRAM, and the
    LUTs of the multipliers beyond its DSPs), or None when it fits."""
    from prunehw.hw.target.devices import fabric_multiplier_luts

    where = memory_map(accel)
    ebr = sum(n for kind, n in where.values() if kind == "ebr")
    spram = sum(n for kind, n in where.values() if kind == "spram")
    spram_have = dev.spram_bits // (SPRAM_WIDTH * SPRAM_DEPTH)
    short = []
    if ebr > dev.brams:
        big = max((k for k in where if where[k][0] == "ebr"), key=lambda k: where[k][1])
        short.append(f"block RAM: needs {ebr} of its {dev.brams} {dev.bram} ({big} alone {where[big][1]})")
    if spram > spram_have:
        short.append(f"single-port RAM: its activation buffers and image slots need {spram} SPRAM, it has {spram_have}")
    pes = accel.R * accel.C
    if pes > dev.dsps:
        luts = (pes - dev.dsps) * fabric_multiplier_luts(accel.plan.wbits, 9)
        if luts > dev.luts // 2:
            short.append(f"LUTs: the {pes - dev.dsps} multipliers beyond its {dev.dsps} {dev.dsp} take at least {luts} "
                         f"LUT4, over half its {dev.luts}")
    if not short:
        return None
    return f"does not fit the {dev.name} on a {accel.R}x{accel.C} array: " + "; ".join(short)
