"""The whole-network accelerator: its blocks wired together, with the activation buffers and the image slots.

Generated from a :class:`~prunehw.hw.compile.program.Program` (itself built from the
numeric contract), it runs every layer from ``start`` to ``done`` by itself.

Interface (all synchronous to ``clk``):

- image load, at any time: ``img_we``, ``img_pixel`` (row-major pixel index),
  ``img_chan`` (channel, < C), ``img_data`` (uint8) write one input value into
  the image buffer's load slot (a one-channel image is stored packed,
  ``Program.image_pack`` pixels a word). The buffer has two slots: ``start``
  hands the load slot to the computation and makes the other one the load
  slot, so the next image loads while this one is computed (each ``start``
  computes the image loaded since the previous one);
- ``start`` (one-cycle pulse) runs the network; ``busy`` is high while it
  runs; ``done`` rises when the logits are ready and stays high until the next
  ``start``;
- the host port, a register bank read through ``csr_addr`` / ``csr_data``
  (32 bits, the word one cycle after its address): logit i at address i
  (signed, at the last layer's accumulator precision, sign-extended),
  then the performance counters in ``COUNTERS`` order and one cycle count
  per op in program order (:meth:`Accelerator.host_map`). The logits are
  valid while ``done``; the counters are reset by ``start``.

The blocks, each an Amaranth component with its own documented signature:
:class:`~prunehw.hw.gateware.controller.Controller` (the schedule, one beat or pooling
read a cycle), :class:`~prunehw.hw.gateware.feeder.Feeder` (im2col reads in place and
weight tiles), :class:`~prunehw.hw.gateware.systolic_array.SystolicArray`,
:class:`~prunehw.hw.gateware.writeback.WriteBack` (accumulation, requantization,
fused pooling), :class:`~prunehw.hw.gateware.pooling.Pooling` (a pooling pass of its
own) and :class:`~prunehw.hw.gateware.counters.Counters` (counters and the host
port). This module holds the memories they share: the two ping-pong
activation buffers and the two-slot image buffer, each in one copy or R
(see :mod:`~prunehw.hw.compile.program`), read by the feeder or the pooling pass
and written from one registered write request. Every block RAM read takes
:data:`~prunehw.hw.gateware.block_ram.READ_LATENCY` (3) cycles; every design
error the mutation campaign builds in goes through the blocks' ``taps``
(:mod:`~prunehw.hw.gateware.taps`), never through code in the production path.
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from prunehw.hw.gateware.block_ram import BlockRAM
from prunehw.hw.gateware.controller import Controller
from prunehw.hw.gateware.counters import COUNTERS, Counters
from prunehw.hw.host.counters import counter_names
from prunehw.hw.gateware.feeder import FEED_STAGES, Feeder
from prunehw.hw.gateware.pe import PSUM_DELAY
from prunehw.hw.gateware.plan import PSUM_FORWARD, Plan
from prunehw.hw.gateware.pooling import POOL_WRITE, Pooling
from prunehw.hw.compile.program import IMAGE, Program
from prunehw.hw.gateware.systolic_array import SystolicArray
from prunehw.hw.gateware.taps import PASS
from prunehw.hw.gateware.writeback import ADD_STAGES, BOTTOM_STAGES, DIVIDE_STAGES, WriteBack

__all__ = ["Accelerator", "BOTTOM_STAGES", "COUNTERS", "FEED_STAGES", "POOL_WRITE", "PSUM_FORWARD"]


class Accelerator(wiring.Component):
    """See the module docstring.

    Parameters
    ----------
    program : Program
        The compiled network (:mod:`~prunehw.hw.compile.program`): it fixes every size and ROM image.
    taps : Taps or None
        The mutation campaign's hook (:mod:`~prunehw.hw.gateware.taps`; the faults themselves live with the
        verification code, :mod:`prunehw.sim.faults`); a hook that chooses its fault at run time (``SelectTaps``)
        adds a ``fault_select`` input. Real designs use none.

    Members
    -------
    start : In(1), busy, done : Out(1)
        Run the loaded image; busy until the logits are in, done until the next start.
    img_we, img_pixel, img_chan, img_data : In
        The image load port: one pixel channel a cycle, into the free image slot.
    csr_addr : In, csr_data : Out(32)
        The host port: the logits, then the counters (:meth:`host_map`), one cycle after the address.
    """

    def __init__(self, *, program: Program, taps=None):
        if not isinstance(program, Program):
            raise TypeError(f"program must be a Program, not {program!r}")
        self.taps = taps or PASS
        self.plan = plan = Plan(program)
        self.program = program
        self.R, self.C, self.ACC = plan.R, plan.C, plan.ACC
        self.offw, self.lanew, self.aw = plan.offw, plan.lanew, plan.aw
        # After an op's last issue, wait until its last output write has landed before the next op
        # issues: a matmul writes FEED_STAGES + array latency + BOTTOM_STAGES cycles after it, a
        # pooling op at POOL_WRITE; the next op may read the same buffer one cycle after its issue.
        self.array_latency = self.R + self.C - 1 + PSUM_DELAY
        # (a design that divides: the division's stages, the first of them taken by the add stages where there
        # are some)
        divide = DIVIDE_STAGES if plan.divides else 0
        deeper = ADD_STAGES + max(divide - 1, 0) if plan.residual else divide
        self.mm_drain = FEED_STAGES + self.array_latency + BOTTOM_STAGES + deeper - 1
        self.pool_drain = POOL_WRITE + (DIVIDE_STAGES if plan.divides else 0) - 1
        self.n_ops = plan.n_ops
        self.n_counters = len(COUNTERS) + self.n_ops
        h, w, c = program.input_shape
        super().__init__({
            "start": In(1), "busy": Out(1), "done": Out(1),
            "img_we": In(1), "img_pixel": In(range(max(2, h * w))), "img_chan": In(range(max(2, self.C))),
            "img_data": In(8),
            "csr_addr": In(range(max(2, program.n_logits + self.n_counters))), "csr_data": Out(32),
            # the mutation campaign's shared build only (``sim.faults.SelectTaps``): which built-in fault is on
            **({"fault_select": In(range(len(self.taps.names) + 1))} if hasattr(self.taps, "bind") else {}),
        })
        if hasattr(self.taps, "bind"):
            self.taps.bind(self.fault_select)

    def host_map(self) -> dict[str, int]:
        """{register name: address} of the host port: ``logit<i>``, then the counters, then ``cycles_<op>``."""
        names = [f"logit{i}" for i in range(self.program.n_logits)] + counter_names(op.name for op in self.program.ops)
        return {n: a for a, n in enumerate(names)}

    def memory_shapes(self, single_port: bool = False) -> dict[str, tuple[int, int]]:
        """{name: (bits per word, words)} of every clocked memory, as the blocks declare them; ``single_port``: as
        they are built for a part whose platform asks for ``single_port_buffers`` (each buffer, and each image slot,
        one memory: see ``BlockRAM``).

        Synthesis is checked against this: each may become block RAM (or, when
        small, logic), and nothing else should.
        """
        plan, R, C = self.plan, self.R, self.C
        # (named as synthesis names them: by the block that holds each)
        shapes = {f"feeder.{plan.wrom_names[b]}": (R * C * b, len(plan.wimgs[b])) for b in plan.wwidths}
        shapes |= {"feeder.rtrom": (R * plan.entry, len(plan.rimg)),
                  "writeback.brom": (C * self.ACC, len(plan.bimg))}
        for name, (width, depth, granularity) in self.ram_specs().items():
            single = single_port and name != "writeback.psum"
            split = BlockRAM.single_port_split(width, depth, 2 if name.startswith("img") else 1) if single else \
                BlockRAM.split(width, depth, granularity)
            for sub, shape in split.items():
                shapes[f"{name}.{sub}"] = shape
        return shapes

    def ram_specs(self) -> dict[str, tuple[int, int, int]]:
        """{name: (width, depth, write granularity)} of the read/write memories: partial sums, and each copy of
        the two ping-pong activation buffers (``act<b>_bank<k>``) and of the two-slot image buffer (``img_bank<k>``)."""
        p, C = self.program, self.C
        specs = {"writeback.psum": (C * self.ACC, self.plan.psum_words, C * self.ACC)}
        for b in (b for b in self.plan.buffers if b != IMAGE):
            for k in range(p.copies[b]):
                specs[f"act{b}_bank{k}"] = (C * self.plan.abits, p.buf_depth[b], self.plan.abits)
        for k in range(p.copies[IMAGE]):
            specs[f"img_bank{k}"] = (C * 8, 2 * p.image_stride, 8)
        return specs

    def elaborate(self, platform):
        m = Module()
        plan, taps, p = self.plan, self.taps, self.program
        R, C = self.R, self.C

        m.submodules.ctrl = ctrl = Controller(plan=plan, mm_drain=self.mm_drain, pool_drain=self.pool_drain, taps=taps)
        m.submodules.feeder = feeder = Feeder(plan=plan, taps=taps)
        m.submodules.array = arr = SystolicArray(rows=R, cols=C, x_width=9, w_width=plan.wbits, acc_width=self.ACC, taps=taps)
        m.submodules.writeback = wb = WriteBack(plan=plan, latency=arr.latency, taps=taps)
        m.submodules.pooling = pool = Pooling(plan=plan, read_layout=ctrl.pool_layout, taps=taps)
        k = ctrl.k
        # the run ends when its last events are counted (``Counters.settled``, two cycles after the controller's
        # last): busy until then, done from then, and a start taken only then
        settled = Signal()
        accepted = self.start & ~ctrl.busy & settled
        m.d.comb += [ctrl.start.eq(self.start & settled), self.busy.eq(ctrl.busy | ~settled)]
        m.d.comb += [feeder.k.eq(k), feeder.beat.eq(ctrl.beat), feeder.table_addr.eq(ctrl.table_addr),
                     feeder.table_en.eq(ctrl.table_en)]
        m.d.comb += [arr.x.eq(feeder.x), arr.w.eq(feeder.w), arr.w_nz.eq(feeder.w_nz),
                     arr.valid.eq(feeder.entry.v), arr.load.eq(feeder.entry.first)]
        m.d.comb += [wb.k.eq(k), wb.op.eq(ctrl.op), wb.entry.eq(feeder.entry), wb.y.eq(arr.y)]
        m.d.comb += [pool.k.eq(k), pool.read.eq(ctrl.pool_read)]

        # -- activation buffers: ping-pong 0 and 1, and the image's two slots ------------------------
        # (a part with large single-port RAM holds them there, each image slot in a memory of its own: see BlockRAM)
        single = bool(getattr(platform, "single_port_buffers", False))
        rams = {name: BlockRAM(width=w, depth=d, granularity=g, single_port=single,
                               parts=2 if single and name.startswith("img") else 1)
                for name, (w, d, g) in self.ram_specs().items() if name != "writeback.psum"}
        for name, ram in rams.items():
            m.submodules[name] = ram
        banks = [[rams[f"img_bank{i}" if b == IMAGE else f"act{b}_bank{i}"] for i in range(p.copies[b])]
                 for b in plan.buffers]
        act = [bank for b in plan.buffers if b != IMAGE for bank in banks[b]]       # (the activation buffers' banks)
        # the slot ``start`` computes, and the one the host loads meanwhile
        cslot, load_slot = Signal(), Signal()
        with m.If(accepted):
            m.d.sync += [cslot.eq(load_slot), load_slot.eq(taps("top.next_load_slot", ~load_slot, held=load_slot))]

        # reads: only the input buffer; one word a beat from a buffer kept in one copy, the word of each
        # row this beat uses from a replicated one; copy 0 also serves the pooling pass
        pr = ctrl.pool_read
        for b in plan.buffers:
            for i, bank in enumerate(banks[b]):
                addr = Mux(pr.v, pr.addr, feeder.r_addr[i]) if i == 0 else feeder.r_addr[i]
                en = (feeder.r_en[i] | (pr.v if i == 0 else 0)) & (k.in_buf == b)
                if plan.residual and b != IMAGE and i == 0:
                    # (copy 0 of the buffer holding an add's other input serves the write-back's reads of it: never
                    # the op's own input buffer)
                    short = wb.short_en & (k.short_buf == b)
                    addr, en = Mux(short, wb.short_addr, addr), en | short
                m.d.comb += [bank.r_addr.eq(Cat(addr[:plan.slot_bits], cslot) if b == IMAGE else addr), bank.r_en.eq(en)]
        ab = plan.abits
        bank_names, widened = {id(ram): name for name, ram in rams.items()}, {}

        def word(bank, b):
            """A bank's word as the datapath carries it: a ping-pong buffer narrower than a byte a lane has its lanes
            sign-extended (a signed layer's) or zero-extended to bytes."""
            if b == IMAGE or ab == 8:
                return bank.r_data
            if id(bank) in widened:
                return widened[id(bank)]
            wide = widened[id(bank)] = Signal(plan.word, name=f"{bank_names[id(bank)]}_word")
            for j in range(C):
                lane = bank.r_data[j * ab:(j + 1) * ab]
                m.d.comb += wide[j].eq(Mux(k.in_signed, lane.as_signed(), lane))   # (.eq extends a signed value by its sign)
            return wide

        for i in range(R):   # (a buffer kept in one copy gives every row the same word; each row picks its lane)
            m.d.comb += feeder.words[i].eq(Array(word(banks[b][min(i, len(banks[b]) - 1)], b)
                                                 for b in range(len(banks)))[k.in_buf])
        m.d.comb += pool.data.eq(Array(word(banks[b][0], b) for b in range(len(banks)))[k.in_buf])
        if plan.residual:    # (each lane's stored bits, zero-extended: the write-back takes the input's own bits)
            def stored(bank):
                return bank.r_data if ab == 8 else Cat(*(Cat(bank.r_data[j * ab:(j + 1) * ab], Const(0, 8 - ab))
                                                        for j in range(C)))

            m.d.comb += wb.short_word.eq(Array(stored(banks[b][0]) if b != IMAGE else 0 for b in range(len(banks)))
                                         [k.short_buf])

        # writes: one registered write request drives every copy of the output buffer straight from
        # flip-flops (whole words)
        outs = [b for b in plan.buffers if b != IMAGE]
        w_q = Signal(data.StructLayout({"addr": plan.aw, "data": plan.word, **{f"en{b}": 1 for b in outs}}))
        with m.If(wb.fire | pool.fire):
            m.d.sync += [w_q.addr.eq(Mux(pool.fire, pool.addr, wb.addr)), w_q.data.eq(Mux(pool.fire, pool.word, wb.word))]
            if len(outs) == 2:
                m.d.sync += [w_q.en0.eq(~k.out_buf), w_q.en1.eq(k.out_buf)]
            else:
                m.d.sync += [w_q[f"en{b}"].eq(k.out_buf == b) for b in outs]
        with m.Else():
            m.d.sync += [w_q[f"en{b}"].eq(0) for b in outs]
        for b in outs:
            for bank in banks[b]:
                # (a narrower buffer keeps each lane's low bits: the value was saturated to the layer's width)
                m.d.comb += [bank.w_addr.eq(w_q.addr),
                             bank.w_data.eq(w_q.data if ab == 8 else Cat(*(w_q.data[j][:ab] for j in range(C)))),
                             bank.w_en.eq(Mux(w_q[f"en{b}"], -1, 0))]
        # the image load writes one lane of the load slot (registered: it lands a cycle after ``img_we``),
        # whether or not an inference is running on the other slot
        i_q = Signal(data.StructLayout({"addr": plan.slot_bits + 1, "data": plan.word, "en": C}))
        if p.image_pack > 1:   # packed: pixel p to word p // P, lane p % P
            s_ = p.image_pack.bit_length() - 1
            iaddr, ilane = self.img_pixel >> s_, self.img_pixel[:s_]
        else:
            iaddr, ilane = self.img_pixel, self.img_chan
        iaddr = Cat(iaddr, Const(0, plan.slot_bits))[:plan.slot_bits]   # (zero-extended to the slot's width)
        m.d.sync += [i_q.addr.eq(Cat(iaddr, load_slot)), i_q.data.eq(Cat(*[self.img_data] * C)),
                     i_q.en.eq(Mux(self.img_we, 1 << ilane, 0))]
        for bank in banks[IMAGE]:
            m.d.comb += [bank.w_addr.eq(i_q.addr), bank.w_data.eq(i_q.data), bank.w_en.eq(i_q.en)]

        # -- counters and the host port ------------------------------------------------------------
        # memory activity counted at the ports, every read and write enable (while busy; the image load
        # is the host's transfer, not part of an inference, and may run during the previous one)
        # (reads of the ping-pong buffers and of the image buffer apart: their words differ in width and size)
        events = {"weight_reads": [feeder.weight_read], "weight_bits_read": [feeder.weight_bits_read],
                  "act_reads": [bank.r_en for bank in act], "image_reads": [bank.r_en for bank in banks[IMAGE]],
                  "act_writes": [bank.w_en.any() for bank in act],
                  "psum_reads": [wb.psum_read], "psum_writes": [wb.psum_write], "bias_reads": [wb.bias_read],
                  "table_reads": [feeder.table_read]}
        flags = {n: v for n, v in events.items() if n != "weight_bits_read"}    # (1-bit enables, counted)
        values = {"weight_bits_read": feeder.weight_bits_read, "mults": arr.mults, "mults_gated": arr.gated,
                  "wreg_writes": arr.wreg_writes}                              # (counts, added)
        m.submodules.counters = cnt = Counters(n_ops=self.n_ops, macs_width=plan.aw,
                                               flag_widths={n: len(v) for n, v in flags.items()},
                                               value_widths={n: len(v) for n, v in values.items()},
                                               logits_layout=wb.logits.shape())
        m.d.comb += [cnt.busy.eq(ctrl.busy), cnt.clear.eq(accepted), cnt.op.eq(ctrl.op), cnt.beat.eq(ctrl.issued.beat),
                     cnt.macs.eq(ctrl.issued.macs), cnt.logits.eq(wb.logits),
                     cnt.csr_addr.eq(self.csr_addr), self.csr_data.eq(cnt.csr_data)]
        m.d.comb += [cnt.flags[n].eq(Cat(*v)) for n, v in flags.items()]
        m.d.comb += [cnt.values[n].eq(v) for n, v in values.items()]
        m.d.comb += [settled.eq(cnt.settled), self.done.eq(ctrl.done & cnt.settled)]
        return m
