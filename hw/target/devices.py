"""The devices a design can be built for: each part's resources, primitives and tool commands, in one table.

Figures from Lattice's ECP5 and ECP5-5G family data sheet (FPGA-DS-02012), table 1.1: LUTs, sysMEM block RAMs
(EBR, 18 kbit each) and 18x18 multipliers per part; nextpnr-ecp5's ``--report`` gives the same counts as the
bels it places on (``capacity`` in a synthesis result). All three parts come in the CABGA381 package (the
ULX3S's), so a design placed on one is placed on the same package on the others.

:func:`fit_problem` is the check made before any tool runs: the memories the generator declares against the
device's block RAM, the PEs' multipliers against its DSPs. It is a lower bound on what the design needs (a
memory narrower than a block still takes the block), so a design it passes may still fail in placement, and
that failure is reported by the placer's run.
"""

from __future__ import annotations

from dataclasses import dataclass

from prunehw.core.errors import ConfigError

__all__ = ["DEFAULT_DEVICE", "DEVICES", "Device", "device", "fit_problem", "memory_bits"]


@dataclass(frozen=True)
class Device:
    """One FPGA part: what it holds and how the open tools build for it.

    Parameters
    ----------
    name : str
        The part as Lattice names it (``LFE5U-85F``).
    family : str
        The tools' family (``ecp5``): the yosys ``synth_<family>`` script and ``yowasp-nextpnr-<family>``.
    luts, dsps, brams : int
        LUT4s, 18x18 multipliers and block RAMs.
    bram_bits : int
        Bits of one block RAM.
    dsp, bram : str
        The multiplier and block RAM primitives the generator instantiates and yosys maps to.
    nextpnr_args : tuple of str
        nextpnr's arguments selecting the part and its package.
    """

    name: str
    family: str
    luts: int
    dsps: int
    brams: int
    bram_bits: int
    dsp: str
    bram: str
    nextpnr_args: tuple[str, ...]

    @property
    def ram_bits(self) -> int:
        return self.brams * self.bram_bits

    @property
    def synth_command(self) -> str:
        return f"synth_{self.family}"

    @property
    def nextpnr(self) -> str:
        return f"yowasp-nextpnr-{self.family}"

    def platform(self):
        """The ``platform`` the gateware is elaborated with for this device (its primitives)."""
        from prunehw.hw.target.ecp5 import ECP5

        return ECP5(self.name)


def _ecp5(name: str, luts: int, brams: int, dsps: int, size: str) -> Device:
    return Device(name=name, family="ecp5", luts=luts, dsps=dsps, brams=brams, bram_bits=18 * 1024,
                  dsp="MULT18X18D", bram="DP16KD", nextpnr_args=(f"--{size}", "--package", "CABGA381"))


#: Every device a design can be built for, by name.
DEVICES = {d.name: d for d in (
    _ecp5("LFE5U-25F", luts=24_288, brams=56, dsps=28, size="25k"),
    _ecp5("LFE5U-45F", luts=43_848, brams=108, dsps=72, size="45k"),
    _ecp5("LFE5U-85F", luts=83_640, brams=208, dsps=156, size="85k"),
)}
DEFAULT_DEVICE = "LFE5U-85F"


def device(name: str) -> Device:
    """The device called ``name``; an unknown name is refused in one line naming those allowed."""
    try:
        return DEVICES[name]
    except KeyError:
        raise ConfigError(f"unknown device {name!r}; allowed: {', '.join(DEVICES)}") from None


def memory_bits(memory_shapes: dict) -> int:
    """The bits a design's memories hold: ``memory_shapes`` is {name: [bits per word, words]} (the accelerator's
    ``memory_shapes()``) or {name: {"bits":, "words":}} (``accelerator.json``)."""
    return sum(s["bits"] * s["words"] if isinstance(s, dict) else s[0] * s[1] for s in memory_shapes.values())


def fit_problem(dev: Device, memory_shapes: dict, multipliers: int) -> str | None:
    """One line saying what ``dev`` lacks for a design with ``memory_shapes`` (as :func:`memory_bits` reads them)
    and ``multipliers`` PE multipliers, or None when both fit."""
    bits = memory_bits(memory_shapes)
    short = []
    if bits > dev.ram_bits:
        short.append(f"memory: needs {bits / 1e6:.2f} Mbit, has {dev.ram_bits / 1e6:.2f} Mbit of block RAM "
                     f"({bits / dev.ram_bits:.2f}x)")
    if multipliers > dev.dsps:
        short.append(f"multipliers: needs {multipliers} {dev.dsp}, has {dev.dsps} ({multipliers - dev.dsps} short)")
    return f"does not fit the {dev.name}: " + "; ".join(short) if short else None
