"""The im2col feeder: turns each issued beat into one activation per array row and the fold's weight tile."""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from prunehw.hw.gateware.block_ram import READ_LATENCY
from prunehw.hw.gateware.plan import Plan
from prunehw.hw.gateware.taps import PASS

__all__ = ["Feeder", "FEED_STAGES", "READ_STAGE"]

#: The stage (cycles after the beat's issue) at which the feeder reads the input buffer.
READ_STAGE = 4
#: Cycles from a matmul beat's issue to its entry into the array: row table read (3), the activation
#: address register (1), the buffer read (READ_LATENCY), the lane select register (1).
FEED_STAGES = READ_STAGE + READ_LATENCY + 1


class Feeder(wiring.Component):
    """Reads activations in place (no im2col copy) and the weight tiles, for the array.

    Stage k is k cycles after the beat's issue. 0: the row table ROM is
    read (its entry holds for the whole fold: read on the fold's first beat);
    3: its entry, registered twice, gives each row's word address (base pixel +
    row offset; a packed image's pixel is split into word and lane) and lane,
    registered; :data:`READ_STAGE` (4): the input buffer is read at ``r_addr``
    (the top picks the buffer and its copies); 7: ``words`` arrive, each row
    picks its lane and sign-extends it into ``x``, registered; 8
    (:data:`FEED_STAGES`): the beat enters the array (``entry``). The weight
    tile is read at 5, on the fold's first beat only (the PEs take it on that
    beat), and registered twice beside its non-zero flags. Every block RAM
    output goes straight into a register: the ECP5's DP16KD has a slow
    clock-to-output, so no logic may follow it in the same cycle.

    Parameters
    ----------
    plan : Plan
        The program's schedule and sizes: rows, word width, the weight ROMs' images and the row tables.
    taps : Taps
        The mutation campaign's hook (:mod:`~prunehw.hw.gateware.taps`); ``PASS`` (no fault) in real designs.

    Members
    -------
    k : In(plan.op_layout)
        The running op's constants (``packed``, ``in_signed``, ...), registered once more inside.
    beat, table_addr, table_en : In
        The issued beat and its row table read (from the controller).
    r_addr : Out(ArrayLayout(aw, R)), r_en : Out(ArrayLayout(1, R))
        Stage 4: the word each row reads, and whether the row is valid in this beat.
    words : In(ArrayLayout(plan.word, R))
        Stage 7: the word row i asked for, from the input buffer.
    x : Out(ArrayLayout(signed(9), R)), w : Out(plan.tile), w_nz : Out(plan.tile_nz), entry : Out(plan.beat)
        Stage 8: the array's inputs and the beat's metadata.
    weight_read, table_read : Out(1)
        Read enables of the weight ROMs (the running layer's) and the row table ROM (activity).
    weight_bits_read : Out(range(R * C * 8 + 1))
        The bits the weight ROM read this cycle moves (its word width; 0 when none is read).
    """

    def __init__(self, *, plan: Plan, taps=PASS):
        self.plan, self.taps = plan, taps
        R, aw = plan.R, plan.aw
        super().__init__({
            "k": In(plan.op_layout), "beat": In(plan.beat), "table_addr": In(aw), "table_en": In(1),
            "r_addr": Out(data.ArrayLayout(aw, R)), "r_en": Out(data.ArrayLayout(1, R)),
            "words": In(data.ArrayLayout(plan.word, R)),
            "x": Out(data.ArrayLayout(signed(9), R)), "w": Out(plan.tile), "w_nz": Out(plan.tile_nz),
            "entry": Out(plan.beat), "weight_read": Out(1), "table_read": Out(1),
            "weight_bits_read": Out(range(R * plan.C * 8 + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        plan, taps = self.plan, self.taps
        # the running op's constants, registered once more here, beside their users: no path from the
        # controller's op registers, across the die, ends in the feeder's address arithmetic. They change only
        # between ops, while the array drains, and an op's first beat uses them three cycles after they change
        # (stage 3), so the copy a cycle late is always the running op's
        k = Signal(plan.op_layout, name="k_local")
        m.d.sync += k.eq(self.k)
        R, C, p = plan.R, plan.C, plan.program
        where = {"rows": R, "cols": C}
        # one weight ROM per weight width (``plan.wrom_names``)
        several = len(plan.wwidths) > 1
        wroms = {}
        for b in plan.wwidths:
            wroms[b] = Memory(shape=R * C * b, depth=len(plan.wimgs[b]), init=plan.wimgs[b])
            m.submodules[plan.wrom_names[b]] = wroms[b]
        # (the row table is read once per fold: logic, not a block RAM of its own)
        m.submodules.rtrom = rtrom = Memory(shape=R * plan.entry, depth=len(plan.rimg), init=plan.rimg,
                                            attrs={"rom_style": "logic"})
        w_rds, rt_rd = {b: rom.read_port() for b, rom in wroms.items()}, rtrom.read_port(domain="comb")

        feed = [self.beat]
        for d in range(1, FEED_STAGES + 1):
            nxt = Signal(plan.beat, name=f"meta_f{d}")
            m.d.sync += nxt.eq(feed[-1])
            feed.append(nxt)

        # the row table's address is registered here, beside the table, and held between reads (stage 1): the
        # controller's adder that forms it and the route across the die end at this register, the table's logic
        # starts from it. The table's word is then registered twice, the second register carrying it to its users
        t_addr = Signal.like(self.table_addr, name="table_addr_q", reset_less=True)
        with m.If(self.table_en):
            m.d.sync += t_addr.eq(self.table_addr)
        m.d.comb += [rt_rd.addr.eq(t_addr), self.table_read.eq(self.table_en)]
        rtv1, rtv = Signal(plan.table_row, reset_less=True), Signal(plan.table_row, reset_less=True)
        m.d.sync += [rtv1.eq(rt_rd.data), rtv.eq(rtv1)]                  # stages 1 -> 2 -> 3
        A = READ_STAGE
        lane_d = [[Signal(plan.lanew, name=f"lane{A + d}_{i}") for i in range(R)] for d in range(READ_LATENCY + 1)]
        rv_d = [[Signal(name=f"rowv{A + d}_{i}") for i in range(R)] for d in range(READ_LATENCY + 1)]
        here = feed[A - 1]
        for i in range(R):
            row_valid = rtv[i].valid
            if plan.padded:
                # a tap on the zero padding reads nothing and feeds a zero; its (negative or past-the-edge)
                # address is never used
                addr = rtv[i].off.as_signed() + here.base
                y, x = here.iy + rtv[i].ky, here.ix + rtv[i].kx
                row_valid = row_valid & (y >= k.pad_t) & (y < k.h_pt) & (x >= k.pad_l) & (x < k.w_pl)
            else:
                addr = rtv[i].off + here.base
            lane = rtv[i].lane
            if p.image_pack > 1:
                # the image is packed: word = pixel // P, lane = pixel % P
                s_ = p.image_pack.bit_length() - 1
                addr, lane = Mux(k.packed, addr >> s_, addr), Mux(k.packed, addr[:s_], lane)
            addr = taps("feed.address", addr, row=i, **where)
            lane = taps("feed.lane", lane, row=i, **where)
            m.d.sync += [self.r_addr[i].eq(addr), lane_d[0][i].eq(lane), rv_d[0][i].eq(row_valid)]   # 3 -> A
            m.d.comb += self.r_en[i].eq(taps("feed.read_enable", feed[A].v & rv_d[0][i], beat=feed[A].v, row=i, **where))
            for d in range(1, READ_LATENCY + 1):
                m.d.sync += [lane_d[d][i].eq(lane_d[d - 1][i]), rv_d[d][i].eq(rv_d[d - 1][i])]

        # the words' stage: each row selects its lane and sign-extends it (an unsigned byte gets a 0 sign bit)
        X = A + READ_LATENCY
        for i in range(R):
            byte = Array(self.words[i][j] for j in range(C))[lane_d[X - A][i]]
            x = Mux(k.in_signed, byte.as_signed(), Cat(byte, Const(0, 1)).as_signed())
            m.d.sync += self.x[i].eq(Mux(rv_d[X - A][i], x, 0))                 # X -> FEED_STAGES

        # the weight tile: read two stages ahead of the array on the fold's first beat, registered twice;
        # which weights are not zero is registered beside it (the PEs gate on it)
        rd = feed[FEED_STAGES - 3]
        fetch = rd.v & rd.first
        w_q, nz_q = Signal(plan.tile, reset_less=True), Signal(plan.tile_nz)
        if not several:
            (w_rd,) = w_rds.values()
            m.d.comb += [w_rd.addr.eq(rd.waddr), w_rd.en.eq(fetch), self.weight_read.eq(w_rd.en)]
            w_near = Signal(plan.tile, reset_less=True)
            m.d.sync += [w_near.eq(w_rd.data), w_q.eq(w_near)]
            m.d.sync += [nz_q[i][j].eq(w_near[i][j] != 0) for i in range(R) for j in range(C)]
        else:
            # only the running layer's ROM is read; each lands in its own register beside the RAM, then the one
            # read is picked and its weights sign-extended to the array's width
            sel = Signal(range(len(plan.wwidths)))
            m.d.sync += sel.eq(k.wsel)
            w_pick = Signal(plan.tile)
            for idx, (b, w_rd) in enumerate(w_rds.items()):
                m.d.comb += [w_rd.addr.eq(rd.waddr), w_rd.en.eq(fetch & (k.wsel == idx))]
                near = Signal(data.ArrayLayout(data.ArrayLayout(signed(b), C), R), name=f"w_near_w{b}", reset_less=True)
                m.d.sync += near.eq(w_rd.data)
                with m.If(sel == idx):
                    m.d.comb += [w_pick[i][j].eq(near[i][j]) for i in range(R) for j in range(C)]
            m.d.comb += self.weight_read.eq(fetch)
            m.d.sync += [w_q.eq(w_pick)]
            m.d.sync += [nz_q[i][j].eq(w_pick[i][j] != 0) for i in range(R) for j in range(C)]
        w_rows = taps("feed.weight_rows", [w_q[i] for i in range(R)], **where)
        nz_rows = taps("feed.weight_rows", [nz_q[i] for i in range(R)], **where)
        m.d.comb += [self.w[i].eq(w_rows[i]) for i in range(R)]
        m.d.comb += [self.w_nz[i].eq(nz_rows[i]) for i in range(R)]
        m.d.comb += self.entry.eq(feed[FEED_STAGES])
        m.d.comb += self.weight_bits_read.eq(Mux(fetch, Array(R * C * b for b in plan.wwidths)[k.wsel] if several
                                                 else R * C * plan.wbits, 0))
        return m
