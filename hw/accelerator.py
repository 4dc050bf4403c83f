"""The whole-network accelerator: systolic array, im2col feeder, requantization, pooling, controller.

Generated from a :class:`~prunehw.hw.program.Program` (itself built from the
numeric contract), it runs every layer from ``start`` to ``done`` by itself.

Interface (all synchronous to ``clk``):

- image load, while idle: ``img_we``, ``img_pixel`` (row-major pixel index),
  ``img_chan`` (channel, < C), ``img_data`` (uint8) write one input value;
- ``start`` (one-cycle pulse) runs the network; ``busy`` is high while it
  runs; ``done`` rises when the logits are ready and stays high until the next
  ``start``;
- ``logits``: every logit, signed, at the last layer's accumulator precision
  (a flat bus, logit i in bits ``[i*W, (i+1)*W)``), valid while ``done``;
- ``counters``: the performance counters, 32 bits each, in ``COUNTERS`` order
  and then one cycle count per op in program order; reset by ``start``.

Pipeline of a matmul beat (one output position of one fold, one per cycle):
stage 0 issues counters and ROM addresses (row table, weight tile); stage 1
forms the R activation addresses (base pixel + row offset) and reads R
replicated activation banks; stage 2 selects lanes and enters the array;
``R + C - 1`` cycles later the bottom stage adds the bias (first row tile) or
the stored partial sum, stores the new partial sum, and on the last row tile
requantizes (ReLU, round half up, saturate) and writes the output word, or
keeps the logits. Partial-sum reads are issued one cycle early on a port that
is transparent to the write port, so back-to-back folds of one position
(dense layers) accumulate without stalls.
"""

from __future__ import annotations

import numpy as np
from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from prunehw.hw.cycle_model import POOL_DRAIN, drain_cycles
from prunehw.hw.program import MatmulOp, PoolOp, Program
from prunehw.hw.systolic_array import SystolicArray

__all__ = ["Accelerator", "COUNTERS"]

#: Performance counters, in ``counter_sel`` order; per-op cycle counters follow.
COUNTERS = ("total_cycles", "beats", "macs", "weight_reads", "act_reads", "act_writes", "psum_reads", "psum_writes",
            "bias_reads")


def _pack(values, width: int) -> int:
    out = 0
    for i, v in enumerate(values):
        out |= (int(v) & ((1 << width) - 1)) << (i * width)
    return out


class Accelerator(wiring.Component):
    """See the module docstring. ``program`` fixes every size and ROM image."""

    def __init__(self, program: Program, *, fault: str | None = None):
        if not isinstance(program, Program):
            raise TypeError(f"program must be a Program, not {program!r}")
        from prunehw.hw.faults import FAULTS

        if fault is not None and fault not in FAULTS:
            raise ValueError(f"fault {fault!r} is unknown; allowed: {', '.join(FAULTS)}")
        self.fault = fault  # a deliberate design error for the mutation campaign (hw/faults.py); None in real designs
        self.program = program
        p = program
        self.R, self.C, self.ACC = p.rows, p.cols, p.acc_bits + 2
        self.n_ops = len(p.ops)
        self.n_counters = len(COUNTERS) + self.n_ops
        h, w, c = p.input_shape
        super().__init__({
            "start": In(1), "busy": Out(1), "done": Out(1),
            "img_we": In(1), "img_pixel": In(range(max(2, h * w))), "img_chan": In(range(max(2, self.C))),
            "img_data": In(8),
            "logits": Out(data.ArrayLayout(signed(self.ACC), p.n_logits)),
            "counters": Out(data.ArrayLayout(unsigned(32), self.n_counters)),
        })

    # -- ROM images --------------------------------------------------------------------
    def _roms(self):
        p, R, C = self.program, self.R, self.C
        tiles, table, bias = [], [], []
        self.wbase, self.rtbase, self.bbase = [], [], []
        for op in p.ops:
            self.wbase.append(len(tiles))
            self.rtbase.append(len(table))
            self.bbase.append(len(bias))
            if isinstance(op, MatmulOp):
                tiles += op.tiles
                table += op.row_table
                bias += op.bias
        self.offw = ceil_log2(max(max(p.buf_depth), 2)) + 1
        self.lanew = max(1, ceil_log2(C))
        entry = self.offw + self.lanew + 1
        wimg = [_pack([_pack(t[i], 8) for i in range(R)], 8 * C) for t in tiles]
        rimg = [_pack([off | (lane << self.offw) | (v << (self.offw + self.lanew)) for off, lane, v in row], entry) for row in table]
        bimg = [_pack(b, self.ACC) for b in bias]
        return (wimg or [0]), (rimg or [0]), (bimg or [0]), entry

    def elaborate(self, platform):
        m = Module()
        p, R, C, ACC = self.program, self.R, self.C, self.ACC
        wimg, rimg, bimg, entry = self._roms()
        ops = p.ops
        word = data.ArrayLayout(unsigned(8), C)
        sumw = data.ArrayLayout(signed(ACC), C)
        tile = data.ArrayLayout(data.ArrayLayout(signed(8), C), R)
        rtl = data.ArrayLayout(data.StructLayout({"off": self.offw, "lane": self.lanew, "valid": 1}), R)

        # -- memories ----------------------------------------------------------------
        m.submodules.wrom = wrom = Memory(shape=R * C * 8, depth=len(wimg), init=wimg)
        m.submodules.rtrom = rtrom = Memory(shape=R * entry, depth=len(rimg), init=rimg)
        m.submodules.brom = brom = Memory(shape=C * ACC, depth=len(bimg), init=bimg)
        max_m = max((o.positions for o in p.matmuls()), default=1)
        m.submodules.psum = psum = Memory(shape=C * ACC, depth=max(max_m, 2), init=[])
        w_rd, rt_rd, b_rd = wrom.read_port(), rtrom.read_port(), brom.read_port()
        ps_wr = psum.write_port()
        ps_rd = psum.read_port(transparent_for=() if self.fault == "psum_not_transparent" else (ps_wr,))
        banks_rd, banks_wr = [[], []], [[], []]
        for b in range(2):
            for k in range(R):
                mem = Memory(shape=C * 8, depth=p.buf_depth[b], init=[0] * p.buf_depth[b])
                m.submodules[f"act{b}_bank{k}"] = mem
                banks_wr[b].append(mem.write_port(granularity=8))
                banks_rd[b].append(mem.read_port())

        # -- per-op constants: a ROM read combinationally at ``op`` --------------------------
        # (a ROM rather than a case statement on ``op``: event-driven simulators never
        # evaluate a combinational process whose inputs never change, and ``op`` stays 0
        # for the whole first layer)
        names = ("M", "out_w", "in_w", "n_rt", "n_ct", "wbase", "rtbase", "bbase", "in_pix", "out_pix", "pool",
                 "pool_w_step", "pool_row_step", "rows_last", "cols_last")
        klayout = data.StructLayout({**{n: 20 for n in names}, "in_buf": 1, "out_buf": 1, "in_signed": 1,
                                     "is_last": 1, "is_pool": 1})
        kinit = []
        for i, o in enumerate(ops):
            vals = dict.fromkeys(names, 0)
            vals.update(in_pix=o.in_pix, out_pix=o.out_pix, in_w=o.in_shape[1], out_w=o.out_shape[1], n_ct=o.n_ct,
                        in_buf=o.in_buf, out_buf=o.out_buf, is_pool=int(isinstance(o, PoolOp)),
                        in_signed=int(o.in_signed if isinstance(o, MatmulOp) else o.signed),
                        is_last=int(isinstance(o, MatmulOp) and o.last))
            if isinstance(o, MatmulOp):
                vals.update(M=o.positions, n_rt=o.n_rt, wbase=self.wbase[i], rtbase=self.rtbase[i], bbase=self.bbase[i],
                            rows_last=o.rows - (o.n_rt - 1) * R, cols_last=o.cols - (o.n_ct - 1) * C)
            else:
                vals.update(pool=o.pool, pool_w_step=o.in_shape[1] - o.pool + 1,
                            pool_row_step=o.pool * o.in_shape[1] - o.pool * (o.out_shape[1] - 1))
            kinit.append(vals)
        m.submodules.oprom = oprom = Memory(shape=klayout, depth=max(2, self.n_ops), init=kinit)
        op = Signal(range(max(2, self.n_ops)))
        k_rd = oprom.read_port(domain="comb")
        m.d.comb += k_rd.addr.eq(op)
        kc = k_rd.data
        k_ = {n: kc[n] for n in names}
        in_buf, out_buf, in_signed, is_last, is_pool = kc.in_buf, kc.out_buf, kc.in_signed, kc.is_last, kc.is_pool

        # -- counters --------------------------------------------------------------------
        counters = Array(Signal(32, name=f"cnt_{n}") for n in list(COUNTERS) + [f"op{i}" for i in range(self.n_ops)])
        cnt = {n: counters[i] for i, n in enumerate(COUNTERS)}
        m.d.comb += [self.counters[i].eq(c) for i, c in enumerate(counters)]

        # -- controller --------------------------------------------------------------------
        ct, rt, pos, base, obase, tile_i, ox = (Signal(range(2 ** 20), name=n) for n in ("ct", "rt", "pos", "base", "obase", "tile_i", "ox"))
        drain = Signal(range(max(drain_cycles(R, C), POOL_DRAIN) + 1))
        # pooling counters: window (dx, dy), window offset, top-left pixel, output pixel
        dx, dy, woff, pbase, px, q = (Signal(range(2 ** 20), name=n) for n in ("dx", "dy", "woff", "pbase", "px", "q"))
        # ``busy`` is a register, not decoded from the FSM state: the image port reads it
        # before the FSM ever leaves IDLE, when an event-driven simulator may not yet have
        # evaluated a combinational decode (Icarus in SystemVerilog mode does not).
        busy = Signal()
        m.d.comb += self.busy.eq(busy)
        issue = Signal()          # a matmul beat is issued this cycle
        pissue = Signal()         # a pooling read is issued this cycle
        done = Signal()
        m.d.comb += self.done.eq(done)

        def reset_op_counters():
            return [ct.eq(0), rt.eq(0), pos.eq(0), base.eq(0), obase.eq(0), ox.eq(0), dx.eq(0), dy.eq(0), woff.eq(0),
                    pbase.eq(0), px.eq(0), q.eq(0)]

        with m.FSM(name="ctrl"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [op.eq(0), done.eq(0), busy.eq(1), *reset_op_counters(), tile_i.eq(0)]
                    m.d.sync += [c.eq(0) for c in counters]
                    m.next = "POOL" if isinstance(ops[0], PoolOp) else "MM"
            with m.State("MM"):
                m.d.comb += issue.eq(1)
                last_pos = pos == k_["M"] - (2 if self.fault == "ctrl_positions_off_by_one" else 1)
                last_rt = rt == k_["n_rt"] - (2 if self.fault == "ctrl_row_tiles_off_by_one" else 1)
                last_ct = ct == k_["n_ct"] - (2 if self.fault == "ctrl_col_tiles_off_by_one" else 1)
                with m.If(last_pos):
                    m.d.sync += [pos.eq(0), base.eq(0), ox.eq(0), tile_i.eq(tile_i + 1)]
                    with m.If(last_rt):
                        m.d.sync += [rt.eq(0), ct.eq(ct + 1), obase.eq(obase + k_["out_pix"])]
                        with m.If(last_ct):
                            m.d.sync += [drain.eq(drain_cycles(R, C) - 1), tile_i.eq(0)]
                            m.next = "MM_DRAIN"
                    with m.Else():
                        m.d.sync += rt.eq(rt + 1)
                with m.Else():
                    m.d.sync += pos.eq(pos + 1)
                    with m.If(ox == k_["out_w"] - 1):
                        m.d.sync += [ox.eq(0), base.eq(base + k_["in_w"] - k_["out_w"] + (2 if self.fault == "im2col_row_step_off_by_one" else 1))]
                    with m.Else():
                        m.d.sync += [ox.eq(ox + 1), base.eq(base + 1)]
            for state in ("MM_DRAIN", "POOL_DRAIN"):
                with m.State(state):
                    with m.If(drain == 0):
                        m.d.sync += reset_op_counters()
                        with m.If(op == self.n_ops - 1):
                            m.d.sync += [done.eq(1), busy.eq(0)]
                            m.next = "IDLE"
                        with m.Else():
                            m.d.sync += op.eq(op + 1)
                            with m.Switch(op):
                                for i in range(self.n_ops - 1):
                                    with m.Case(i):
                                        m.next = "POOL" if isinstance(ops[i + 1], PoolOp) else "MM"
                    with m.Else():
                        m.d.sync += drain.eq(drain - 1)
            with m.State("POOL"):
                m.d.comb += pissue.eq(1)
                last_dx = dx == k_["pool"] - (2 if self.fault == "pool_window_short" else 1)
                last_dy = dy == k_["pool"] - 1
                with m.If(last_dx):
                    m.d.sync += dx.eq(0)
                    with m.If(last_dy):
                        m.d.sync += [dy.eq(0), woff.eq(0), q.eq(q + 1)]
                        with m.If(q == k_["out_pix"] - 1):
                            m.d.sync += [q.eq(0), px.eq(0), pbase.eq(0), ct.eq(ct + 1), obase.eq(obase + k_["out_pix"]),
                                         base.eq(base + k_["in_pix"])]
                            with m.If(ct == k_["n_ct"] - 1):
                                m.d.sync += drain.eq(POOL_DRAIN - 1)
                                m.next = "POOL_DRAIN"
                        with m.Elif(px == k_["out_w"] - 1):
                            m.d.sync += [px.eq(0), pbase.eq(pbase + k_["pool_row_step"])]
                        with m.Else():
                            m.d.sync += [px.eq(px + 1), pbase.eq(pbase + k_["pool"])]
                    with m.Else():
                        m.d.sync += [dy.eq(dy + 1), woff.eq(woff + k_["pool_w_step"])]
                with m.Else():
                    m.d.sync += [dx.eq(dx + 1), woff.eq(woff + 1)]

        # -- cycle and activity counters ---------------------------------------------------
        with m.If(busy):
            m.d.sync += cnt["total_cycles"].eq(cnt["total_cycles"] + 1)
            m.d.sync += counters[len(COUNTERS) + op].eq(counters[len(COUNTERS) + op] + 1)

        # -- stage 0: ROM addresses ----------------------------------------------------------
        m.d.comb += [rt_rd.addr.eq(k_["rtbase"] + rt), w_rd.addr.eq(k_["wbase"] + tile_i)]
        rows_valid = Mux(rt == k_["n_rt"] - 1, k_["rows_last"], R)
        cols_valid = Mux(ct == k_["n_ct"] - 1, k_["cols_last"], C)
        meta = data.StructLayout({"v": 1, "first": 1, "first_rt": 1, "last_rt": 1, "pos": 20, "ct": 16, "oaddr": 20})
        m0 = Signal(meta)
        m.d.comb += [m0.v.eq(issue), m0.first.eq(pos == 0), m0.first_rt.eq(rt == 0),
                     m0.last_rt.eq(rt == k_["n_rt"] - (2 if self.fault == "ctrl_row_tiles_off_by_one" else 1)),
                     m0.pos.eq(pos), m0.ct.eq(ct), m0.oaddr.eq(obase + pos)]
        with m.If(issue):
            m.d.sync += [cnt["beats"].eq(cnt["beats"] + 1), cnt["macs"].eq(cnt["macs"] + rows_valid * cols_valid),
                         cnt["act_reads"].eq(cnt["act_reads"] + rows_valid)]
            with m.If(pos == 0):
                m.d.sync += cnt["weight_reads"].eq(cnt["weight_reads"] + 1)
            with m.If(rt == 0):
                m.d.sync += cnt["bias_reads"].eq(cnt["bias_reads"] + 1)
            with m.Else():
                m.d.sync += cnt["psum_reads"].eq(cnt["psum_reads"] + 1)
            with m.If(rt != k_["n_rt"] - 1):
                m.d.sync += cnt["psum_writes"].eq(cnt["psum_writes"] + 1)
        base1 = Signal.like(base)
        m1 = Signal(meta)
        m.d.sync += [m1.eq(m0), base1.eq(base)]

        # -- stage 1: activation addresses, bank reads ----------------------------------------
        rtv = rtl(rt_rd.data)
        lane2 = [Signal(self.lanew, name=f"lane2_{i}") for i in range(R)]
        rv2 = [Signal(name=f"rowv2_{i}") for i in range(R)]
        w2 = Signal(tile)
        m2 = Signal(meta)
        for i in range(R):
            addr = rtv[i].off + base1
            if self.fault == "act_read_addr_bit1_flip" and i == 3 % R:
                addr = addr ^ 2
            for b in range(2):
                m.d.comb += banks_rd[b][i].addr.eq(addr)
            lane = rtv[i].lane ^ 1 if self.fault == "im2col_lane_swap" and C > 1 else rtv[i].lane
            m.d.sync += [lane2[i].eq(lane), rv2[i].eq(rtv[i].valid)]
        m.d.sync += [w2.eq(w_rd.data), m2.eq(m1)]
        w_in = Signal(tile)
        m.d.comb += w_in.eq(w2)
        if self.fault == "weight_rows_swapped" and R > 1:
            m.d.comb += [w_in[0].eq(w2[1]), w_in[1].eq(w2[0])]

        # -- stage 2: lane select into the array ------------------------------------------------
        m.submodules.array = arr = SystolicArray(rows=R, cols=C, x_width=9, w_width=8, acc_width=ACC,
                                                 fault=self.fault if self.fault and self.fault.startswith(("pe_", "skew_")) else None)
        for i in range(R):
            words = [word(banks_rd[b][i].data) for b in range(2)]
            lanes0 = Array(words[0][j] for j in range(C))
            lanes1 = Array(words[1][j] for j in range(C))
            byte = Signal(8, name=f"byte_{i}")
            m.d.comb += byte.eq(Mux(in_buf, lanes1[lane2[i]], lanes0[lane2[i]]))
            x = Mux(in_signed, byte.as_signed(), Cat(byte, Const(0, 1)).as_signed())
            m.d.comb += arr.x[i].eq(Mux(rv2[i], x, 0))
        m.d.comb += [arr.valid.eq(m2.v), arr.load.eq(m2.first), arr.w.eq(w_in)]

        # -- metadata delay line to the bottom of the array -------------------------------------
        line = [m2]
        for d in range(arr.latency):
            nxt = Signal(meta, name=f"meta_d{d + 1}")
            m.d.sync += nxt.eq(line[-1])
            line.append(nxt)
        mA, mB = line[-1], line[-2]   # aligned with the array output; one cycle earlier
        m.d.comb += [ps_rd.addr.eq(mB.pos), b_rd.addr.eq(k_["bbase"] + mB.ct)]

        # -- bottom: accumulate, store, requantize/write or keep logits --------------------------
        prev = Signal(sumw)
        bias_in = 0 if self.fault == "bias_dropped" else b_rd.data
        psum_in = 0 if self.fault == "psum_dropped" else ps_rd.data
        m.d.comb += prev.eq(Mux(mA.first_rt, bias_in, psum_in))
        total = Signal(sumw)
        for j in range(C):
            m.d.comb += total[j].eq(prev[j] + arr.y[j])
        if self.fault == "acc_stuck1_bit12" and C > 1:
            m.d.comb += total[1].eq((prev[1] + arr.y[1]) | (1 << 12))
        m.d.comb += [ps_wr.addr.eq(mA.pos), ps_wr.data.eq(total), ps_wr.en.eq(mA.v & ~mA.last_rt)]

        logits = Array(Signal(signed(ACC), name=f"logit{i}") for i in range(p.n_logits))
        m.d.comb += [self.logits[i].eq(v) for i, v in enumerate(logits)]
        out_word = Signal(word)
        with m.Switch(op):
            for i, o in enumerate(ops):
                if not isinstance(o, MatmulOp):
                    continue
                with m.Case(i):
                    if o.last:
                        with m.If(mA.v & mA.last_rt):
                            for j in range(C):
                                for ctv in range(o.n_ct):
                                    if ctv * C + j < p.n_logits:
                                        with m.If(mA.ct == ctv):
                                            dst = ctv * C + j
                                            if self.fault == "logits_swapped" and dst < 2:
                                                dst = 1 - dst
                                            m.d.sync += logits[dst].eq(total[j])
                    else:
                        for j in range(C):
                            m.d.comb += out_word[j].eq(_requant(total[j], o.acc_frac, o.out, self.fault))

        # -- pooling datapath --------------------------------------------------------------------
        paddr = Signal(20)
        m.d.comb += paddr.eq(base + pbase + woff)
        pv1, pfirst1, plast1 = Signal(), Signal(), Signal()
        poaddr1 = Signal(20)
        m.d.sync += [pv1.eq(pissue), pfirst1.eq((dx == 0) & (dy == 0)), plast1.eq((dx == k_["pool"] - (2 if self.fault == "pool_window_short" else 1)) & (dy == k_["pool"] - 1)),
                     poaddr1.eq(obase + q)]
        pword = Signal(C * 8)
        m.d.comb += pword.eq(Mux(in_buf, banks_rd[1][0].data, banks_rd[0][0].data))
        pdata = word(pword)
        mx = Signal(word)
        pmax = Signal(word)
        for j in range(C):
            a, b = pdata[j], mx[j]
            bigger = Mux(in_signed, a.as_signed() > b.as_signed(), a > b)
            if self.fault == "pool_min":
                bigger = ~bigger
            m.d.comb += pmax[j].eq(Mux(pfirst1 | bigger, a, b))
        with m.If(pv1):
            m.d.sync += mx.eq(pmax)
        with m.If(pissue):
            m.d.sync += cnt["act_reads"].eq(cnt["act_reads"] + 1)
            for b in range(2):
                m.d.comb += banks_rd[b][0].addr.eq(paddr)

        # -- activation writes: image load, matmul outputs, pooling outputs ------------------------
        mm_we = mA.v & mA.last_rt & ~is_last & ~is_pool
        pool_we = pv1 & plast1
        with m.If(mm_we | pool_we):
            m.d.sync += cnt["act_writes"].eq(cnt["act_writes"] + 1)
        for b in range(2):
            for k in range(R):
                wp = banks_wr[b][k]
                with m.If(mm_we & (out_buf == b)):
                    waddr = mA.oaddr ^ 1 if self.fault == "act_write_addr_bit0_flip" else mA.oaddr
                    m.d.comb += [wp.addr.eq(waddr), wp.data.eq(out_word), wp.en.eq(-1)]
                with m.Elif(pool_we & (out_buf == b)):
                    m.d.comb += [wp.addr.eq(poaddr1), wp.data.eq(pmax), wp.en.eq(-1)]
                if b == 0:
                    with m.Elif(self.img_we & ~busy):
                        m.d.comb += [wp.addr.eq(self.img_pixel), wp.en.eq(1 << self.img_chan)]
                        m.d.comb += wp.data.eq(Cat(*[self.img_data] * C))
        return m


def _requant(acc, acc_frac: int, out: dict, fault: str | None = None):
    """ReLU, round half up to ``out['frac']``, saturate to ``out['bits']``: the contract's rule, as logic."""
    v = Mux(acc < 0, 0, acc) if out["relu"] else acc
    shift = acc_frac - out["frac"] + (1 if fault == "requant_shift_plus_one" else 0)
    if shift > 0:
        q = (v + (0 if fault == "requant_no_rounding" else 1 << (shift - 1))) >> shift
    else:
        q = v << (-shift)
    if out["signed"] or fault == "requant_signed_range":
        lo, hi = -(1 << (out["bits"] - 1)), (1 << (out["bits"] - 1)) - 1
    else:
        lo, hi = 0, (1 << out["bits"]) - 1
    if fault == "requant_no_saturation":
        return q[:8]
    sat = Mux(q > hi, hi, Mux(q < lo, lo, q))
    return sat[:8]
