"""A pooling pass of its own, max or average (a pooling layer with no convolution before it to fuse into)."""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from prunehw.hw.gateware.block_ram import READ_LATENCY
from prunehw.hw.gateware.plan import Plan
from prunehw.hw.gateware.taps import PASS
from prunehw.hw.gateware.writeback import pooled, with_pooled_word

__all__ = ["POOL_WRITE", "Pooling"]

#: Cycles from a pooling read's issue to its window's result being written: the read request's
#: register (in the controller), the buffer read (READ_LATENCY), the word's register (the buffers' read
#: multiplexers and the window's arithmetic are then two paths, not one), the running maximum and the window's
#: result register. A design that divides by a window size that is not a power of two has
#: ``writeback.DIVIDE_STAGES`` more (the division's stages).
POOL_WRITE = 1 + READ_LATENCY + 1 + 1


class Pooling(wiring.Component):
    """Keeps the running maximum of each window's words, read one a cycle, and asks for the window's word
    to be written with its last element.

    Parameters
    ----------
    plan : Plan
        The program's sizes (word and address widths, lanes per word).
    read_layout : StructLayout
        The controller's pooling read (``Controller.pool_layout``).
    taps : Taps
        The mutation campaign's hook (:mod:`~prunehw.hw.gateware.taps`); ``PASS`` (no fault) in real designs.

    Members
    -------
    k : In(plan.op_layout)
        The running op's constants (``in_signed``).
    read : In(StructLayout)
        The controller's registered pooling read (``Controller.pool_layout``); the top reads the input
        buffer at its address.
    data : In(plan.word)
        That word, :data:`~prunehw.hw.gateware.block_ram.READ_LATENCY` cycles later (registered here before use).
    fire : Out(1), addr : Out(aw), word : Out(plan.word)
        A finished window: its word and output address.
    """

    def __init__(self, *, plan: Plan, read_layout: data.StructLayout, taps=PASS):
        self.plan, self.taps = plan, taps
        super().__init__({"k": In(plan.op_layout), "read": In(read_layout), "data": In(plan.word),
                          "fire": Out(1), "addr": Out(plan.aw), "word": Out(plan.word)})

    def elaborate(self, platform):
        m = Module()
        plan = self.plan
        where = {"rows": plan.R, "cols": plan.C}
        stage = self.read
        for d in range(READ_LATENCY):
            nxt = Signal.like(self.read, name=f"pmeta{d + 2}")
            m.d.sync += nxt.eq(stage)
            stage = nxt
        word_q, nxt = Signal(plan.word, name="pool_in"), Signal.like(self.read, name=f"pmeta{READ_LATENCY + 2}")
        m.d.sync += [word_q.eq(self.data), nxt.eq(stage)]
        stage = nxt
        pooled(m, plan, self.k, stage.first, stage.v, word_q, self.k.in_signed, self.word, self.taps, where)
        fire, addr = with_pooled_word(m, plan, stage.v & stage.last, stage.oaddr)
        m.d.comb += [self.fire.eq(fire), self.addr.eq(addr)]
        return m
