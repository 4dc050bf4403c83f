"""Performance counters and the host port (an address/data register bank holding the logits and counters)."""

from __future__ import annotations

from amaranth import Array, Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["COUNTERS", "Counters"]

#: Performance counters, in host-port order; one cycle count per op follows.
COUNTERS = ("total_cycles", "beats", "macs", "weight_reads", "weight_bits_read", "act_reads", "image_reads", "act_writes",
            "psum_reads", "psum_writes", "bias_reads", "table_reads", "mults", "mults_gated", "wreg_writes")
#: The counters that add an event count each cycle (``events``); the others are counted from the controller.
EVENTS = COUNTERS[3:]


class Counters(wiring.Component):
    """32-bit counters, cleared by ``clear`` and counting while ``busy``, read with the logits through the host port.

    Members
    -------
    busy, clear : In(1)
        Count while ``busy``; ``clear`` (the accepted ``start``) zeroes every counter.
    op : In(range(n_ops))
        The running op, whose cycle counter counts.
    beat, macs : In
        Registered by the controller: a beat issued the cycle before, and its useful MACs.
    events : In(StructLayout)
        Per :data:`EVENTS` counter, how many of its events (memory port enables, PE multiplies,
        register writes) happened this cycle.
    logits : In(ArrayLayout(signed(acc), n_logits))
    csr_addr : In, csr_data : Out(32)
        The host port: logit i at address i (sign-extended), then the counters in :data:`COUNTERS` order,
        then the per-op cycle counters; the word comes one cycle after its address.
    """

    def __init__(self, *, n_ops: int, macs_width: int, event_widths: dict[str, int], logits_layout):
        self.n_ops = n_ops
        self.events_layout = data.StructLayout({n: event_widths[n] for n in EVENTS})
        self.n_logits = logits_layout.length
        super().__init__({
            "busy": In(1), "clear": In(1), "op": In(range(max(2, n_ops))), "beat": In(1), "macs": In(macs_width),
            "events": In(self.events_layout), "logits": In(logits_layout),
            "csr_addr": In(range(max(2, self.n_logits + len(COUNTERS) + n_ops))), "csr_data": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        counters = [Signal(32, name=f"cnt_{n}") for n in COUNTERS] + [Signal(32, name=f"cnt_op{i}") for i in range(self.n_ops)]
        cnt = dict(zip(COUNTERS, counters))
        with m.If(self.clear):
            m.d.sync += [c.eq(0) for c in counters]
        with m.Elif(self.busy):
            m.d.sync += [cnt["total_cycles"].eq(cnt["total_cycles"] + 1),
                         cnt["beats"].eq(cnt["beats"] + self.beat), cnt["macs"].eq(cnt["macs"] + self.macs)]
            m.d.sync += [cnt[n].eq(cnt[n] + self.events[n]) for n in EVENTS]
            for i in range(self.n_ops):  # one comparator each, not a read-modify-write through a mux on ``op``
                with m.If(self.op == i):
                    m.d.sync += counters[len(COUNTERS) + i].eq(counters[len(COUNTERS) + i] + 1)
        bank = Array([*(self.logits[i].as_signed() for i in range(self.n_logits)), *counters])
        m.d.sync += self.csr_data.eq(bank[self.csr_addr])
        return m
