"""The accelerator behind a serial host link (:class:`BoardCore`): what a board carries and what the cocotb
testbench simulates, its serial pins driven by the host's protocol code. The board around it (clock, pins) is
a target's (:mod:`prunehw.hw.target.ulx3s`).
"""

from __future__ import annotations

import zlib

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from prunehw.hw.compile.program import Program
from prunehw.hw.gateware.accelerator import COUNTERS, Accelerator
from prunehw.hw.gateware.host_link import HostLink
from prunehw.hw.gateware.uart import UARTRx, UARTTx, check_divisor
from prunehw.hw.host.protocol import BoardInfo

__all__ = ["BOARD_TOP", "BoardCore", "design_id"]


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

    def __init__(self, *, program: Program, design: int, divisor: int, timeout: int):
        self.program, self.divisor, self.timeout = program, check_divisor(divisor), timeout
        self.n_counters = len(COUNTERS) + len(program.ops)
        self.info = BoardInfo(design, program.n_logits, self.n_counters, tuple(program.input_shape), divisor)
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "busy": Out(1), "done": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.accel = accel = Accelerator(program=self.program)
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
