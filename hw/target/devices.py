"""The devices a design can be checked against and built for: each part's resources, primitives and tool
commands, in one table.

ECP5 figures from Lattice's ECP5 and ECP5-5G family data sheet (FPGA-DS-02012), table 1.1: LUTs, sysMEM block
RAMs (EBR, 18 kbit each) and 18x18 multipliers per part; nextpnr-ecp5's ``--report`` gives the same counts as
the bels it places on (``capacity`` in a synthesis result). All three parts come in the CABGA381 package (the
ULX3S's), so a design placed on one is placed on the same package on the others.

The iCE40 UltraPlus 5K from Lattice's iCE40 UltraPlus family data sheet (FPGA-DS-02008), table 1.1: 5,280
LUT4s, 30 sysMEM block RAMs of 4 kbit, 4 single-port RAMs (SPRAM) of 256 kbit and 8 16x16 multipliers
(SB_MAC16); the iCEBreaker's and UPduino's chip, in the SG48 package. Its flavour of the generator is
:mod:`prunehw.hw.target.ice40` (buffers in SPRAM, no primitive instantiated); its block RAM is too small for the
weights of most networks on an 8x8 array, so a design for it is built on the largest array that fits
(:func:`prunehw.hw.generate.array_for`).

:func:`fit_problem` is the check made before any tool runs: the memories the generator declares against the
device's RAM (block RAM, and single-port RAM where the part has it), the PEs' multipliers against its DSPs. It
is a lower bound on what the design needs (a memory narrower than a block still takes the block), so a design
it passes may still fail in placement, and that failure is reported by the placer's run.
"""

from __future__ import annotations

from dataclasses import dataclass

from prunehw.core.errors import ConfigError

__all__ = ["DEFAULT_DEVICE", "DEVICES", "Device", "device", "by_size", "fabric_multiplier_luts", "fit_problem", "memory_bits"]


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
    fabric_multipliers : bool
        Whether the generator builds the PEs beyond the part's DSPs with multipliers in LUTs.
    spram_bits : int
        Bits of single-port RAM beside the block RAM (the iCE40 UltraPlus's SPRAM), 0 where there is none.
    unsupported : str or None
        Why the generator cannot build for this part yet (None: it can); said in place of tool runs.
    target_mhz : float or None
        The clock a design for this part is placed for, where the part cannot reach the run's ``[synth]
        target_mhz`` (None: the run's): the UP5K's is the iCEBreaker's oscillator, 12 MHz.
    synth_options : tuple of str
        Options of the family's yosys script.
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
    fabric_multipliers: bool = False
    spram_bits: int = 0
    unsupported: str | None = None
    target_mhz: float | None = None
    synth_options: tuple[str, ...] = ()

    @property
    def ram_bits(self) -> int:
        """Every RAM bit of the part: its block RAM and its single-port RAM."""
        return self.brams * self.bram_bits + self.spram_bits

    @property
    def ram_name(self) -> str:
        return "block RAM" + (" and SPRAM" if self.spram_bits else "")

    @property
    def synth_command(self) -> str:
        return f"synth_{self.family}"

    @property
    def nextpnr(self) -> str:
        return f"yowasp-nextpnr-{self.family}"

    def platform(self):
        """The ``platform`` the gateware is elaborated with for this device (its primitives)."""
        if self.unsupported:
            raise ConfigError(f"{self.name}: {self.unsupported}")
        if self.family == "ice40":
            from prunehw.hw.target.ice40 import ICE40

            return ICE40(self.name)
        from prunehw.hw.target.ecp5 import ECP5

        return ECP5(self.name)

    def accelerator_problem(self, accel) -> str | None:
        """What this part lacks for ``accel`` (an unelaborated Accelerator), counted the way its flavour maps the
        memories (None: it fits, or the family is checked by :func:`fit_problem` on the memory shapes)."""
        if self.family == "ice40":
            from prunehw.hw.target.ice40 import fit_problem as ice40_fit

            return ice40_fit(self, accel)
        return None


def _ecp5(name: str, luts: int, brams: int, dsps: int, size: str) -> Device:
    return Device(name=name, family="ecp5", luts=luts, dsps=dsps, brams=brams, bram_bits=18 * 1024,
                  dsp="MULT18X18D", bram="DP16KD", nextpnr_args=(f"--{size}", "--package", "CABGA381"),
                  fabric_multipliers=True)


#: Every device a design can be built for, by name.
DEVICES = {d.name: d for d in (
    _ecp5("LFE5U-25F", luts=24_288, brams=56, dsps=28, size="25k"),
    _ecp5("LFE5U-45F", luts=43_848, brams=108, dsps=72, size="45k"),
    _ecp5("LFE5U-85F", luts=83_640, brams=208, dsps=156, size="85k"),
    Device(name="iCE40UP5K", family="ice40", luts=5_280, dsps=8, brams=30, bram_bits=4 * 1024, dsp="SB_MAC16",
           bram="SB_RAM40_4K", nextpnr_args=("--up5k", "--package", "sg48"), spram_bits=4 * 256 * 1024,
           target_mhz=12.0, synth_options=("-dsp",)),
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


def fabric_multiplier_luts(w_bits: int, x_bits: int) -> int:
    """LUT4s one ``w_bits`` x ``x_bits`` PE multiplier takes in the fabric, at least: two per partial-product bit.
    A lower bound for the fit check, below what yosys 0.23 (``synth_ecp5 -nodsp``) measured on the default
    network's matrix variants on the LFE5U-25F: about 240 LUT4 per 8x9 multiplier and 80 per 4x9 (the design's
    LUT4 there less its LUT4 on the LFE5U-85F, over the 36 fabric multipliers)."""
    return 2 * w_bits * x_bits


def fit_problem(dev: Device, memory_shapes: dict, multipliers: int, operand_bits: tuple[int, int] = (8, 9)
                ) -> str | None:
    """One line saying what ``dev`` lacks for a design with ``memory_shapes`` (as :func:`memory_bits` reads them)
    and ``multipliers`` PE multipliers of ``operand_bits`` (weight, activation), or None when both fit. On a part
    whose PEs beyond its DSPs multiply in the fabric, those multipliers' estimated LUTs must fit its LUTs."""
    bits = memory_bits(memory_shapes)
    short = []
    if bits > dev.ram_bits:
        short.append(f"memory: needs {bits / 1e6:.2f} Mbit, has {dev.ram_bits / 1e6:.2f} Mbit of {dev.ram_name} "
                     f"({bits / dev.ram_bits:.2f}x)")
    if multipliers > dev.dsps and dev.fabric_multipliers:
        luts = (multipliers - dev.dsps) * fabric_multiplier_luts(*operand_bits)
        if luts > dev.luts:
            short.append(f"LUTs: the {multipliers - dev.dsps} multipliers beyond its {dev.dsps} {dev.dsp} take at least "
                         f"{luts} LUT4 in the fabric, it has {dev.luts}")
    elif multipliers > dev.dsps:
        short.append(f"multipliers: needs {multipliers} {dev.dsp}, has {dev.dsps} ({multipliers - dev.dsps} short)")
    return f"does not fit the {dev.name}: " + "; ".join(short) if short else None


def by_size(names) -> list[str]:
    """Device names, smallest part (fewest LUTs) first: the order in which a device table is read."""
    return sorted(dict.fromkeys(names), key=lambda n: device(n).luts)
