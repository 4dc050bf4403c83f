"""Performance counters and the host port (an address/data register bank holding the logits and counters)."""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from prunehw.hw.host.counters import COUNTER_BITS, COUNTERS, EVENTS

__all__ = ["COUNTERS", "Counters"]


class Counters(wiring.Component):
    """The counters of :mod:`prunehw.hw.host.counters` (``COUNTER_BITS`` wide), cleared by ``clear`` and counting while ``busy``, read with the logits through the host port.

    Every input is registered twice before it is counted: once where it arises (the memory port enables, the PE
    flags) and once after each cycle's events are summed, so no counter's adder is on the path of the controller
    or of a memory (the counts lag their events by two cycles; ``settled`` says when they are final).

    Parameters
    ----------
    n_ops : int
        The program's ops, each with its own cycle counter.
    macs_width : int
        Width of the controller's per-beat count of useful MACs.
    flag_widths : dict[str, int]
        Per event counter counted from one-bit sources: how many sources.
    value_widths : dict[str, int]
        Per event counter counted from a per-cycle value: that value's width. With ``flag_widths``, every event
        of :data:`~prunehw.hw.host.counters.EVENTS` exactly once.
    logits_layout : ArrayLayout
        The logits read through the host port before the counters.

    Members
    -------
    busy, clear : In(1)
        Count while ``busy``; ``clear`` (the accepted ``start``) zeroes every counter and drops what is in the
        pipeline (the end of the previous run, already cleared).
    op : In(range(n_ops))
        The running op, whose cycle counter counts.
    beat, macs : In
        Registered by the controller: a beat issued the cycle before, and its useful MACs.
    flags : In(StructLayout)
        Per counter of ``flag_widths``: one bit per source (a port enable, a PE's multiply); the counter adds
        how many are set this cycle.
    values : In(StructLayout)
        Per counter of ``value_widths``: how many of its events happened this cycle (added as they are).
    settled : Out(1)
        Low while the last two cycles' events are still on their way into the counters.
    logits : In(ArrayLayout(signed(acc), n_logits))
    csr_addr : In, csr_data : Out(32)
        The host port: logit i at address i (sign-extended), then the counters in :data:`COUNTERS` order,
        then the per-op cycle counters; the word comes one cycle after its address.
    """

    def __init__(self, *, n_ops: int, macs_width: int, flag_widths: dict[str, int], value_widths: dict[str, int],
                 logits_layout):
        if sorted([*flag_widths, *value_widths]) != sorted(EVENTS):
            raise ValueError(f"flag and value counters {sorted([*flag_widths, *value_widths])!r} are not the event "
                             f"counters {sorted(EVENTS)!r}")
        self.n_ops = n_ops
        self.n_logits = logits_layout.length
        super().__init__({
            "busy": In(1), "clear": In(1), "op": In(range(max(2, n_ops))), "beat": In(1), "macs": In(macs_width),
            "flags": In(data.StructLayout(flag_widths)), "values": In(data.StructLayout(value_widths)),
            "settled": Out(1), "logits": In(logits_layout),
            "csr_addr": In(range(max(2, self.n_logits + len(COUNTERS) + n_ops))), "csr_data": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        counters = ([Signal(COUNTER_BITS, name=f"cnt_{n}") for n in COUNTERS] +
                    [Signal(COUNTER_BITS, name=f"cnt_op{i}") for i in range(self.n_ops)])
        cnt = dict(zip(COUNTERS, counters))
        # stage 1: everything as it arose; stage 2: each cycle's events summed
        ctl = data.StructLayout({"busy": 1, "op": self.op.shape(), "beat": 1, "macs": self.macs.shape()})
        ctl1, ctl2 = Signal(ctl), Signal(ctl)
        flags1, values1 = Signal(self.flags.shape()), Signal(self.values.shape())
        sums2 = {n: Signal(range(len(self.flags[n]) + 1), name=f"sum_{n}") for n in self.flags.shape().members}
        values2 = Signal(self.values.shape())
        m.d.sync += [ctl1.eq(Cat(self.busy, self.op, self.beat, self.macs)), flags1.eq(self.flags),
                     values1.eq(self.values), ctl2.eq(ctl1), values2.eq(values1)]
        m.d.sync += [sums2[n].eq(sum((flags1[n][i] for i in range(len(flags1[n]))), Const(0, 1))) for n in sums2]
        m.d.comb += self.settled.eq(~ctl1.busy & ~ctl2.busy)
        events = {**sums2, **{n: values2[n] for n in self.values.shape().members}}
        with m.If(self.clear):
            m.d.sync += [c.eq(0) for c in counters]
            m.d.sync += [ctl1.busy.eq(0), ctl2.busy.eq(0)]
        with m.Elif(ctl2.busy):
            m.d.sync += [cnt["total_cycles"].eq(cnt["total_cycles"] + 1),
                         cnt["beats"].eq(cnt["beats"] + ctl2.beat), cnt["macs"].eq(cnt["macs"] + ctl2.macs)]
            m.d.sync += [cnt[n].eq(cnt[n] + events[n]) for n in EVENTS]
            for i in range(self.n_ops):  # one comparator each, not a read-modify-write through a mux on ``op``
                with m.If(ctl2.op == i):
                    m.d.sync += counters[len(COUNTERS) + i].eq(counters[len(COUNTERS) + i] + 1)
        bank = Array([*(self.logits[i].as_signed() for i in range(self.n_logits)), *counters])
        m.d.sync += self.csr_data.eq(bank[self.csr_addr])
        return m
