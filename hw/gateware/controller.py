"""The controller: runs the program's ops from ``start`` to ``done``, issuing one beat or pooling read a cycle."""

from __future__ import annotations

from amaranth import Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from prunehw.hw.gateware.plan import Plan
from prunehw.hw.compile.program import PoolOp
from prunehw.hw.gateware.taps import PASS

__all__ = ["Controller"]


class Controller(wiring.Component):
    """Walks each op's schedule: for a matmul ``for ct: for rt: for position`` (window by window when a
    pooling is fused), for a pooling op ``for ct: for window: for element``; then waits a fixed drain
    (``mm_drain`` or ``pool_drain`` cycles after the last issue, until the op's last write has landed)
    and goes on to the next op.

    Parameters
    ----------
    plan : Plan
        The program's schedule and sizes (:mod:`~prunehw.hw.gateware.plan`).
    mm_drain, pool_drain : int
        Cycles waited after a matmul's or a pooling op's last issue before the next op starts (the op's last
        write has landed by then).
    taps : Taps
        The mutation campaign's hook (:mod:`~prunehw.hw.gateware.taps`); ``PASS`` (no fault) in real designs.

    Members
    -------
    start : In(1)
        Starts the network (taken only while not busy).
    busy, done : Out(1)
        ``busy`` from ``start`` to the end of the last op; ``done`` from then until the next ``start``.
    op : Out(range(n_ops))
        The running op's index.
    k : Out(plan.op_layout)
        The running op's constants (registered: read from the op ROM at the next cycle's op index).
    beat : Out(plan.beat)
        The matmul beat issued this cycle (``v`` low when none).
    table_addr, table_en : Out
        The row table read for this beat (its fold's first beat only).
    issued : Out(StructLayout)
        Registered: whether a beat was issued the cycle before (``beat``) and its useful MACs (``macs``).
    pool_read : Out(StructLayout)
        Registered: a pooling read (``v``), the input word's address, whether it is its window's
        first / last element, and the output word's address.
    """

    def __init__(self, *, plan: Plan, mm_drain: int, pool_drain: int, taps=PASS):
        self.plan, self.taps = plan, taps
        self.mm_drain, self.pool_drain = mm_drain, pool_drain
        aw = plan.aw
        self.pool_layout = data.StructLayout({"v": 1, "first": 1, "last": 1, "addr": aw, "oaddr": aw})
        self.issued_layout = data.StructLayout({"beat": 1, "macs": aw})
        super().__init__({
            "start": In(1), "busy": Out(1), "done": Out(1),
            "op": Out(range(max(2, plan.n_ops))), "k": Out(plan.op_layout),
            "beat": Out(plan.beat), "table_addr": Out(aw), "table_en": Out(1),
            "issued": Out(self.issued_layout), "pool_read": Out(self.pool_layout),
        })

    def elaborate(self, platform):
        m = Module()
        plan, taps = self.plan, self.taps
        ops, aw, n_ops = plan.program.ops, plan.aw, plan.n_ops
        where = {"rows": plan.R, "cols": plan.C}

        # per-op constants: a ROM read combinationally at ``op_next`` and registered, so in every cycle
        # ``k`` holds the current op's without a ROM on any path (a ROM rather than a case statement
        # on ``op``: event-driven simulators never evaluate a combinational process whose inputs never
        # change, and ``op`` stays 0 for the whole first layer)
        m.submodules.oprom = oprom = Memory(shape=plan.op_layout, depth=max(2, n_ops), init=plan.op_values)
        op, op_next = self.op, Signal.like(self.op)
        m.d.comb += op_next.eq(op)
        m.d.sync += op.eq(op_next)
        k_rd = oprom.read_port(domain="comb")
        m.d.comb += k_rd.addr.eq(op_next)
        k = self.k
        m.d.sync += k.eq(k_rd.data)

        ct, rt, pos, base, obase, tile_i = (Signal(aw, name=n) for n in ("ct", "rt", "pos", "base", "obase", "tile_i"))
        drain = Signal(range(max(self.mm_drain, self.pool_drain) + 1))
        # window counters (dx, dy), window offset, top-left pixel, output column, output pixel
        dx, dy, woff, pbase, px, q = (Signal(aw, name=n) for n in ("dx", "dy", "woff", "pbase", "px", "q"))
        # ``busy`` is a register, not decoded from the FSM state: the image port reads it before the
        # FSM ever leaves IDLE, when an event-driven simulator may not yet have evaluated a
        # combinational decode (Icarus in SystemVerilog mode does not)
        busy, done = Signal(), Signal()
        m.d.comb += [self.busy.eq(busy), self.done.eq(done)]
        # a matmul beat / a pooling read is issued this cycle: decoded from the FSM state and ANDed
        # with ``busy`` (Icarus leaves a decode X until the state first changes, and an X ``valid``
        # would flow into the activity counters)
        in_mm, in_pool = Signal(), Signal()
        issue, pissue = in_mm & busy, in_pool & busy

        # a strided convolution steps its base pixel by its stride, one window by pool * stride; the plain
        # design's steps are the constant 1 and ``pool``
        stride, win_step = (k.stride, k.win_step) if plan.strided else (1, k.pool)
        stride_h = k.stride_h if plan.tall_stride else stride      # (the vertical one, where it differs)
        # with padding: the position's input row and column (output y, x times stride; ``cy``, ``cx``) and its
        # window's (``wy``, ``wx``), which the feeder checks each row's tap against; without, constants
        cx, cy, wx, wy = (Signal(aw, name=n) for n in ("cx", "cy", "wx", "wy"))

        def track(*stmts):      # (the position tracking exists only in a design with padding)
            return list(stmts) if plan.padded else []

        # a grouped op's (depthwise) column tile reads row tiles of its own: the first of them in the row table
        # (only in a design with a grouped op)
        rtct = Signal(aw, name="rtct") if plan.grouped else None

        def group(reset: bool):  # the column tile's row table base: reset, or stepped to the next column tile's
            return [] if rtct is None else [rtct.eq(0 if reset else rtct + k.rt_step)]

        def reset_walk():
            return [ct.eq(0), rt.eq(0), pos.eq(0), base.eq(0), obase.eq(0), dx.eq(0), dy.eq(0), woff.eq(0),
                    pbase.eq(0), px.eq(0), q.eq(0),
                    *track(cx.eq(0), cy.eq(0), wx.eq(0), wy.eq(0)), *group(reset=True)]

        last_rt = rt == taps("ctrl.row_tiles_limit", k.n_rt_1, **where)
        last_dx = dx == taps("ctrl.window_x_limit", k.pool_1, **where)
        # (the window's last row, and a row of windows' step in input rows: their own where some window is not
        # square, else the width's)
        pool_h_1, winh_step = (k.poolh_1, k.winh_step) if plan.nonsquare else (k.pool_1, win_step)
        last_dy = dy == pool_h_1
        with m.FSM(name="ctrl"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.comb += op_next.eq(0)
                    m.d.sync += [done.eq(0), busy.eq(1), *reset_walk(), tile_i.eq(0)]
                    m.next = "POOL" if isinstance(ops[0], PoolOp) else "MM"
            with m.State("MM"):
                m.d.comb += in_mm.eq(1)
                with m.If(pos == taps("ctrl.positions_limit", k.M_1, **where)):
                    m.d.sync += [pos.eq(0), base.eq(0), pbase.eq(0), px.eq(0), dx.eq(0), dy.eq(0), q.eq(0),
                                 *track(cx.eq(0), cy.eq(0), wx.eq(0), wy.eq(0)), tile_i.eq(tile_i + 1)]
                    with m.If(last_rt):
                        m.d.sync += [rt.eq(0), ct.eq(ct + 1), obase.eq(obase + k.out_pix),
                                     *group(reset=False)]
                        with m.If(ct == taps("ctrl.col_tiles_limit", k.n_ct_1, **where)):
                            m.d.sync += [drain.eq(self.mm_drain - 1), tile_i.eq(0)]
                            m.next = "MM_DRAIN"
                    with m.Else():
                        m.d.sync += rt.eq(rt + 1)
                with m.Else():
                    # the next position: the next element of this pooling window, else the top left
                    # of the next window (a plain convolution's windows are single positions)
                    m.d.sync += pos.eq(pos + 1)
                    with m.If(dx != k.pool_1):
                        m.d.sync += [dx.eq(dx + 1), base.eq(base + stride), *track(cx.eq(cx + stride))]
                    with m.Elif(dy != pool_h_1):
                        m.d.sync += [dx.eq(0), dy.eq(dy + 1), base.eq(base + k.pool_w_step),
                                     *track(cx.eq(wx), cy.eq(cy + stride_h))]
                    with m.Else():
                        m.d.sync += [dx.eq(0), dy.eq(0), q.eq(q + 1)]
                        with m.If(px == k.out_w_1):
                            step = taps("ctrl.window_row_step", k.pool_row_step, **where)
                            m.d.sync += [px.eq(0), pbase.eq(pbase + step), base.eq(pbase + step),
                                         *track(wx.eq(0), cx.eq(0), wy.eq(wy + winh_step), cy.eq(wy + winh_step))]
                        with m.Else():
                            m.d.sync += [px.eq(px + 1), pbase.eq(pbase + win_step), base.eq(pbase + win_step),
                                         *track(wx.eq(wx + win_step), cx.eq(wx + win_step), cy.eq(wy))]
            for state in ("MM_DRAIN", "POOL_DRAIN"):
                with m.State(state):
                    with m.If(drain == 0):
                        m.d.sync += reset_walk()
                        with m.If(op == n_ops - 1):
                            m.d.sync += [done.eq(1), busy.eq(0)]
                            m.next = "IDLE"
                        with m.Else():
                            m.d.comb += op_next.eq(op + 1)
                            with m.Switch(op):
                                for i in range(n_ops - 1):
                                    with m.Case(i):
                                        m.next = "POOL" if isinstance(ops[i + 1], PoolOp) else "MM"
                    with m.Else():
                        m.d.sync += drain.eq(drain - 1)
            with m.State("POOL"):
                m.d.comb += in_pool.eq(1)
                with m.If(last_dx):
                    m.d.sync += dx.eq(0)
                    with m.If(last_dy):
                        m.d.sync += [dy.eq(0), woff.eq(0), q.eq(q + 1)]
                        with m.If(q == k.out_pix_1):
                            m.d.sync += [q.eq(0), px.eq(0), pbase.eq(0), ct.eq(ct + 1), obase.eq(obase + k.out_pix),
                                         base.eq(base + k.in_pix)]
                            with m.If(ct == k.n_ct_1):
                                m.d.sync += drain.eq(self.pool_drain - 1)
                                m.next = "POOL_DRAIN"
                        with m.Elif(px == k.out_w_1):
                            m.d.sync += [px.eq(0), pbase.eq(pbase + k.pool_row_step)]
                        with m.Else():
                            m.d.sync += [px.eq(px + 1), pbase.eq(pbase + k.pool)]
                    with m.Else():
                        m.d.sync += [dy.eq(dy + 1), woff.eq(woff + k.pool_w_step)]
                with m.Else():
                    m.d.sync += [dx.eq(dx + 1), woff.eq(woff + 1)]

        # the beat issued this cycle; its row table entry holds for the whole fold: read on its first beat only
        b = self.beat
        m.d.comb += [self.table_addr.eq(k.rtbase + rt if rtct is None else k.rtbase + rtct + rt), self.table_en.eq(issue & (pos == 0)),
                     b.v.eq(issue), b.first.eq(pos == 0), b.first_rt.eq(rt == 0), b.last_rt.eq(last_rt),
                     b.win_first.eq((dx == 0) & (dy == 0)), b.win_last.eq(last_dx & last_dy),
                     b.pos.eq(pos), b.ct.eq(ct), b.oaddr.eq(obase + q), b.waddr.eq(k.wbase + tile_i),
                     b.base.eq(base), b.fwd.eq(k.fwd)]
        if plan.padded:
            m.d.comb += [b.iy.eq(cy), b.ix.eq(cx)]
        # the issued beat and its useful MACs, registered (sampled only while busy: before the first state
        # change an event-driven simulator may not have evaluated the controller's decodes yet)
        last_ct = ct == k.n_ct_1
        with m.If(busy):
            m.d.sync += [self.issued.beat.eq(issue),
                         self.issued.macs.eq(Mux(issue, Mux(last_rt, Mux(last_ct, k.macs_last_both, k.macs_last_rt),
                                                             Mux(last_ct, k.macs_last_ct, k.macs_full)), 0))]
        with m.Else():
            m.d.sync += self.issued.eq(0)
        # the pooling read issued this cycle, registered
        pr = self.pool_read
        m.d.sync += [pr.addr.eq(base + pbase + woff), pr.v.eq(pissue), pr.first.eq((dx == 0) & (dy == 0)),
                     pr.last.eq(last_dx & last_dy), pr.oaddr.eq(obase + q)]
        return m
