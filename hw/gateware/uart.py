"""An 8N1 serial port (UART) for the board's host link: one start bit, eight data bits LSB first, one stop bit.

Both directions count ``divisor`` clock cycles per bit (the clock over the baud rate). The receiver samples
each bit in its middle, after a two-flip-flop synchronizer; a byte whose stop bit is not high (a framing error,
or a break) is dropped. The transmitter idles high.
"""

from __future__ import annotations

from amaranth import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["UARTRx", "UARTTx", "check_divisor"]


def check_divisor(divisor: int) -> int:
    if not isinstance(divisor, int) or isinstance(divisor, bool) or divisor < 4:
        raise ValueError(f"divisor must be an integer >= 4 (clock cycles per bit), not {divisor!r}")
    return divisor


class UARTRx(wiring.Component):
    """Serial receiver.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (>= 4).

    Members
    -------
    rx : In(1)
        The line (idle high); asynchronous to the clock.
    data : Out(stream.Signature(8, always_ready=True))
        One byte per stream transfer, ``valid`` for one cycle at about the middle of its stop bit (the
        synchronizer's two cycles and one register later); the consumer cannot stall it.
    """

    def __init__(self, *, divisor: int):
        self.divisor = check_divisor(divisor)
        super().__init__({"rx": In(1, init=1), "data": Out(stream.Signature(8, always_ready=True))})

    def elaborate(self, platform):
        m = Module()
        line = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, line, init=1)
        count = Signal(range(self.divisor))
        bits = Signal(range(9))
        shift = Signal(8)
        m.d.sync += self.data.valid.eq(0)
        with m.If(count != 0):
            m.d.sync += count.eq(count - 1)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):                        # a falling edge: wait to the start bit's middle
                    m.d.sync += count.eq(self.divisor // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(count == 0):
                    with m.If(line):                     # a glitch, not a start bit
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [count.eq(self.divisor - 1), bits.eq(0)]
                        m.next = "DATA"
            with m.State("DATA"):
                with m.If(count == 0):
                    m.d.sync += [shift.eq(Cat(shift[1:], line)), bits.eq(bits + 1), count.eq(self.divisor - 1)]
                    with m.If(bits == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(count == 0):
                    m.d.sync += [self.data.payload.eq(shift), self.data.valid.eq(line)]
                    m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    """Serial transmitter.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (>= 4).

    Members
    -------
    data : In(stream.Signature(8))
        A byte is taken when ``valid`` and ``ready``; ``ready`` is high while the line is idle.
    tx : Out(1)
        The line, idle high: the start bit begins the cycle after the transfer, the stop bit ends
        ``10 * divisor`` cycles later, and ``ready`` rises then.
    """

    def __init__(self, *, divisor: int):
        self.divisor = check_divisor(divisor)
        super().__init__({"data": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        count = Signal(range(self.divisor))
        left = Signal(range(11))                      # bits still to send, the one on the line included
        frame = Signal(10, init=0x3FF)                # stop, data (MSB .. LSB), start; shifted out LSB first
        m.d.comb += [self.tx.eq(frame[0]), self.data.ready.eq(left == 0)]
        with m.If(self.data.valid & self.data.ready):
            m.d.sync += [frame.eq(Cat(0, self.data.payload, 1)), left.eq(10), count.eq(self.divisor - 1)]
        with m.Elif(left != 0):
            with m.If(count == 0):
                m.d.sync += [frame.eq(Cat(frame[1:], 1)), left.eq(left - 1), count.eq(self.divisor - 1)]
            with m.Else():
                m.d.sync += count.eq(count - 1)
        return m
