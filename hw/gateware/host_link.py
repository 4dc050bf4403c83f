"""The board's end of the host link: framed requests from the serial port in, the accelerator driven, replies out.

The protocol is :mod:`prunehw.hw.host.protocol`'s (its constants generate this block). The link parses one request at
a time; while it answers, bytes from the host are dropped (a host waits for each reply).
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from prunehw.hw.host.protocol import (BAD_CHECKSUM, BAD_COMMAND, BAD_LENGTH, COMMANDS, NOT_READY, REPLY_SYNC,
                                 REQUEST_SYNC, TIMEOUT)

__all__ = ["HostLink"]


class HostLink(wiring.Component):
    """Request parser, accelerator sequencer and reply sender.

    Parameters
    ----------
    shape : (h, w, c)
        The image: ``LOAD`` takes ``h * w * c`` bytes, pixel-major, channels innermost.
    n_logits, n_counters : int
        Words of the accelerator's host port: the logits from address 0, then the counters.
    info : bytes
        ``INFO``'s reply payload (:class:`~prunehw.hw.host.protocol.BoardInfo` packed).
    timeout : int
        Clock cycles without a byte after which a frame is abandoned (``TIMEOUT``), and the quiet that ends the
        dropping after ``BAD_COMMAND``/``BAD_LENGTH``.

    Members
    -------
    rx : In(stream.Signature(8, always_ready=True))
        Bytes from the serial receiver.
    tx : Out(stream.Signature(8))
        Bytes to the serial transmitter.
    start : Out(1)
        One-cycle pulse to the accelerator, one cycle after a ``START`` request's checksum byte.
    busy, done : In(1)
        The accelerator's.
    img_we, img_pixel, img_chan, img_data : Out
        The accelerator's image load, one write per ``LOAD`` payload byte, one cycle after it arrived.
    csr_addr : Out, csr_data : In(32)
        The accelerator's host port (the word one cycle after its address).
    """

    def __init__(self, *, shape: tuple[int, int, int], n_logits: int, n_counters: int, info: bytes, timeout: int):
        h, w, c = shape
        if min(shape) < 1 or h * w * c > 0xFFFF:
            raise ValueError(f"image shape {shape!r}; allowed: positive sizes of at most 65535 bytes in all")
        if timeout < 2:
            raise ValueError(f"timeout must be at least 2 cycles, not {timeout!r}")
        self.shape, self.n_bytes = (h, w, c), h * w * c
        self.n_logits, self.n_counters, self.info, self.timeout = n_logits, n_counters, bytes(info), timeout
        super().__init__({
            "rx": In(stream.Signature(8, always_ready=True)), "tx": Out(stream.Signature(8)),
            "start": Out(1), "busy": In(1), "done": In(1),
            "img_we": Out(1), "img_pixel": Out(range(max(2, h * w))), "img_chan": Out(range(max(2, c))),
            "img_data": Out(8),
            "csr_addr": Out(range(max(2, n_logits + n_counters))), "csr_data": In(32),
        })

    def elaborate(self, platform):
        m = Module()
        got, byte = self.rx.valid, self.rx.payload
        cmd, length, total = Signal(8), Signal(16), Signal(8)       # the request; total: its bytes' sum so far
        idle = Signal(range(self.timeout + 1))                     # cycles since the last byte of a frame
        pix, chan, left = Signal.like(self.img_pixel), Signal.like(self.img_chan), Signal(16)
        code, plen, pidx, rsum = Signal(8), Signal(16), Signal(16), Signal(8)   # the reply
        words, base, discard = Signal(), Signal.like(self.csr_addr), Signal()
        hidx = Signal(2)
        info = Array(Const(b, 8) for b in self.info or b"\0")
        length_now = Cat(length[:8], byte)                          # the length once its second byte arrives
        op = {k: Const(v, 8) for k, v in COMMANDS.items()}
        known = (cmd == op["LOAD"]) | (cmd == op["START"]) | (cmd == op["LOGITS"]) | (cmd == op["COUNTERS"]) | \
            (cmd == op["INFO"])

        m.d.sync += [self.start.eq(0), self.img_we.eq(0)]
        m.d.comb += self.csr_addr.eq(base + pidx[2:])

        def answer(c, n=0, from_words=False, at=0, then_discard=False):
            m.d.sync += [code.eq(c), plen.eq(n), words.eq(from_words), base.eq(at), pidx.eq(0), hidx.eq(0),
                         rsum.eq(0), discard.eq(then_discard)]
            m.next = "HEADER"

        receiving = Signal()
        with m.If(receiving):
            with m.If(got):
                m.d.sync += [idle.eq(0), total.eq(total + byte)]
            with m.Elif(idle != self.timeout):
                m.d.sync += idle.eq(idle + 1)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(got & (byte == REQUEST_SYNC)):
                    m.d.sync += [total.eq(0), idle.eq(0)]
                    m.next = "COMMAND"
            for state, then in (("COMMAND", "LENGTH0"), ("LENGTH0", "LENGTH1"), ("LENGTH1", None), ("PAYLOAD", None),
                                ("CHECKSUM", None)):
                with m.State(state):
                    m.d.comb += receiving.eq(1)
                    with m.If(~got & (idle == self.timeout)):
                        answer(TIMEOUT)
                    with m.Elif(got):
                        if state == "COMMAND":
                            m.d.sync += cmd.eq(byte)
                        elif state == "LENGTH0":
                            m.d.sync += length.eq(byte)
                        elif state == "LENGTH1":
                            m.d.sync += [length.eq(length_now), left.eq(length_now), pix.eq(0), chan.eq(0)]
                            with m.If(~known):
                                answer(BAD_COMMAND, then_discard=True)
                            with m.Elif(length_now != Mux(cmd == op["LOAD"], self.n_bytes, 0)):
                                answer(BAD_LENGTH, then_discard=True)
                            with m.Elif(length_now == 0):
                                m.next = "CHECKSUM"
                            with m.Else():
                                m.next = "PAYLOAD"
                        elif state == "PAYLOAD":
                            m.d.sync += [self.img_we.eq(1), self.img_data.eq(byte), self.img_pixel.eq(pix),
                                         self.img_chan.eq(chan), left.eq(left - 1)]
                            with m.If(chan == self.shape[2] - 1):
                                m.d.sync += [chan.eq(0), pix.eq(pix + 1)]
                            with m.Else():
                                m.d.sync += chan.eq(chan + 1)
                            with m.If(left == 1):
                                m.next = "CHECKSUM"
                        else:
                            with m.If((total + byte)[:8] != 0):
                                answer(BAD_CHECKSUM)
                            with m.Else():
                                m.next = "EXECUTE"
                        if then:
                            m.next = then
            with m.State("EXECUTE"):
                with m.Switch(cmd):
                    with m.Case(COMMANDS["LOAD"]):
                        answer(COMMANDS["LOAD"])
                    with m.Case(COMMANDS["START"]):
                        with m.If(self.busy):
                            answer(NOT_READY)
                        with m.Else():
                            m.d.sync += self.start.eq(1)
                            answer(COMMANDS["START"])
                    with m.Case(COMMANDS["LOGITS"]):
                        with m.If(~self.busy):         # (waits while an inference runs)
                            with m.If(self.done):
                                answer(COMMANDS["LOGITS"], 4 * self.n_logits, True, 0)
                            with m.Else():
                                answer(NOT_READY)
                    with m.Case(COMMANDS["COUNTERS"]):
                        with m.If(~self.busy):
                            answer(COMMANDS["COUNTERS"], 4 * self.n_counters, True, self.n_logits)
                    with m.Case(COMMANDS["INFO"]):
                        answer(COMMANDS["INFO"], len(self.info))
            # -- the reply: sync, code, length, payload (host-port words or INFO's bytes), checksum ---------
            with m.State("HEADER"):
                head = Array([Const(REPLY_SYNC, 8), code, plen[:8], plen[8:]])[hidx]
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(head)]
                with m.If(self.tx.ready):
                    m.d.sync += [hidx.eq(hidx + 1), rsum.eq(rsum + Mux(hidx == 0, 0, head))]
                    with m.If((hidx == 3) & (plen == 0)):
                        m.next = "CHECKSUM_OUT"
                    with m.Elif(hidx == 3):
                        m.next = "PAYLOAD_OUT"
            with m.State("PAYLOAD_OUT"):
                out = Mux(words, self.csr_data.word_select(pidx[:2], 8), info[pidx])
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(out)]
                with m.If(self.tx.ready):
                    m.d.sync += [pidx.eq(pidx + 1), rsum.eq(rsum + out)]
                    with m.If(pidx == plen - 1):
                        m.next = "CHECKSUM_OUT"
                    with m.Elif(words & (pidx[:2] == 3)):
                        m.next = "NEXT_WORD"
            with m.State("NEXT_WORD"):     # the host port's word comes one cycle after its address
                m.next = "PAYLOAD_OUT"
            with m.State("CHECKSUM_OUT"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(-rsum)]
                with m.If(self.tx.ready):
                    m.d.sync += idle.eq(0)
                    with m.If(discard):
                        m.next = "DISCARD"
                    with m.Else():
                        m.next = "IDLE"
            with m.State("DISCARD"):       # the rest of a refused frame: dropped until the line is quiet
                with m.If(got):
                    m.d.sync += idle.eq(0)
                with m.Elif(idle == self.timeout):
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += idle.eq(idle + 1)
        return m
