"""The whole-network accelerator: systolic array, im2col feeder, requantization, pooling, controller.

Generated from a :class:`~prunehw.hw.program.Program` (itself built from the
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

Pipeline of a matmul beat (one output position of one fold, one per cycle),
laid out for the clock (>= 100 MHz on the ECP5-85F). Every block RAM read
takes :data:`~prunehw.hw.block_ram.READ_LATENCY` (3) cycles: the read, a
reset-less register whose only load is the next register, so the placer can
keep it beside the RAM (the DP16KD's clock-to-output takes more than half a
10 ns cycle), and a register that carries the word to its users. Stage 0
issues the counters and the row table ROM address; 3 has the row table entry
and forms the R activation addresses (base pixel + row offset), registered;
4 reads the input buffer (one word, or one per row from R copies: see
:mod:`~prunehw.hw.program`); 7 selects the lanes and
sign-extends into ``x`` (registered), while the weight tile, read at 5,
arrives registered; 8 enters the array (:data:`FEED_STAGES`). ``R + C - 1 +
PSUM_DELAY`` cycles later (skew, deskew and the PE's operand and product
registers) the bottom adds the bias (first row tile) or the stored partial
sum, read ahead, and registers the new sum; the next cycle stores it as the
partial sum, or on the last row tile requantizes it in two registered steps
(ReLU and rounding half up; shift and saturation), registers the word, keeps
the running maximum of a fused pooling window (a plain convolution's window
is one position) and writes the window's word to the activation buffer
(:data:`BOTTOM_STAGES`); the last layer keeps its logits. Output positions
are walked window by window (:meth:`~prunehw.hw.program.MatmulOp.base_pixels`).
A row tile of the same output position that returns within
:data:`PSUM_FORWARD` beats (dense layers: one beat) takes the running sum
from the bottom's registers, since its memory write has not landed yet.
Pooling: 0 registers the window element's address, 1 reads, 4 updates the
running maximum and registers a finished window, 5 writes it
(:data:`POOL_WRITE`).
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from prunehw.hw.block_ram import READ_LATENCY, BlockRAM
from prunehw.hw.program import IMAGE, MatmulOp, PoolOp, Program
from prunehw.hw.pe import PSUM_DELAY
from prunehw.hw.systolic_array import SystolicArray

__all__ = ["Accelerator", "COUNTERS", "FEED_STAGES", "PSUM_FORWARD"]

#: Cycles from a matmul beat's issue to its entry into the array (see the feed pipeline in ``elaborate``):
#: row table read, two registers, address register, bank read (READ_LATENCY), lane select register.
FEED_STAGES = 4 + READ_LATENCY + 1
#: A later row tile of an output position that returns within this many beats is forwarded from the
#: bottom's registers: the partial-sum memory is read READ_LATENCY cycles ahead and written one cycle
#: after the sum, so a write is seen only by a read issued at least one cycle later.
PSUM_FORWARD = READ_LATENCY + 1
#: Cycles from the array's output to the output word's write: sum, rounding, saturation, and the fused
#: pooling's running maximum (each registered).
BOTTOM_STAGES = 4
#: Cycles from a pooling read's issue to its window's result being written: address register, bank
#: read (READ_LATENCY), running maximum and the window's result register.
POOL_WRITE = 1 + READ_LATENCY + 1

#: Performance counters, in ``counter_sel`` order; per-op cycle counters follow.
COUNTERS = ("total_cycles", "beats", "macs", "weight_reads", "act_reads", "act_writes", "psum_reads", "psum_writes",
            "bias_reads", "table_reads", "mults", "mults_gated", "wreg_writes")


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
        if self.ACC > 32:
            raise ValueError(f"logits of {self.ACC} bits do not fit the host port's 32-bit words (accumulators up to 30 bits)")
        # After an op's last issue, wait until its last output write has landed before the next op
        # issues: a matmul writes FEED_STAGES + array latency + BOTTOM_STAGES cycles after it, a
        # pooling op at POOL_WRITE; the next op may read the same buffer one cycle after its issue.
        array_latency = self.R + self.C - 1 + PSUM_DELAY
        self.mm_drain = FEED_STAGES + array_latency + BOTTOM_STAGES - 1
        self.pool_drain = POOL_WRITE - 1
        self.n_ops = len(p.ops)
        self.n_counters = len(COUNTERS) + self.n_ops
        h, w, c = p.input_shape
        super().__init__({
            "start": In(1), "busy": Out(1), "done": Out(1),
            "img_we": In(1), "img_pixel": In(range(max(2, h * w))), "img_chan": In(range(max(2, self.C))),
            "img_data": In(8),
            "csr_addr": In(range(max(2, p.n_logits + self.n_counters))), "csr_data": Out(32),
        })

    def host_map(self) -> dict[str, int]:
        """{register name: address} of the host port: ``logit<i>``, then the counters, then ``cycles_<op>``."""
        names = [f"logit{i}" for i in range(self.program.n_logits)] + list(COUNTERS)
        names += [f"cycles_{op.name}" for op in self.program.ops]
        return {n: a for a, n in enumerate(names)}

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
        # one width for every controller counter, address and per-op constant, derived from the
        # largest value any of them takes (one past the end of a buffer, of the weight tiles, ...),
        # so nothing wraps however large the network is
        largest = max(*p.buf_depth, 2 * p.image_stride, len(tiles), len(table), len(bias), R * C, R * max(p.buf_depth),
                      *(o.positions * o.n_rt * o.n_ct for o in p.matmuls()))
        self.aw = ceil_log2(largest + 2)
        self.lanew = max(1, ceil_log2(C))
        entry = self.offw + self.lanew + 1
        wimg = [_pack([_pack(t[i], 8) for i in range(R)], 8 * C) for t in tiles]
        rimg = [_pack([off | (lane << self.offw) | (v << (self.offw + self.lanew)) for off, lane, v in row], entry) for row in table]
        bimg = [_pack(b, self.ACC) for b in bias]
        return (wimg or [0]), (rimg or [0]), (bimg or [0]), entry

    def memory_shapes(self) -> dict[str, tuple[int, int]]:
        """{name: (bits per word, words)} of every clocked memory, as ``elaborate`` declares them.

        Synthesis is checked against this: each may become block RAM (or, when
        small, logic), and nothing else should.
        """
        p, R, C, ACC = self.program, self.R, self.C, self.ACC
        wimg, rimg, bimg, entry = self._roms()
        shapes = {"wrom": (R * C * 8, len(wimg)), "rtrom": (R * entry, len(rimg)), "brom": (C * ACC, len(bimg))}
        for name, (width, depth, granularity) in self._ram_specs().items():
            for sub, shape in BlockRAM.split(width, depth, granularity).items():
                shapes[f"{name}.{sub}"] = shape
        return shapes

    def _ram_specs(self) -> dict[str, tuple[int, int, int]]:
        """{name: (width, depth, write granularity)} of the read/write memories: partial sums, and each copy of
        the two ping-pong activation buffers (``act<b>_bank<k>``) and of the two-slot image buffer (``img_bank<k>``)."""
        p, R, C, ACC = self.program, self.R, self.C, self.ACC
        specs = {"psum": (C * ACC, max(max((o.positions for o in p.matmuls()), default=1), 2), C * ACC)}
        for b in range(2):
            for k in range(p.copies[b]):
                specs[f"act{b}_bank{k}"] = (C * 8, p.buf_depth[b], 8)
        for k in range(p.copies[IMAGE]):
            specs[f"img_bank{k}"] = (C * 8, 2 * p.image_stride, 8)
        return specs

    def elaborate(self, platform):
        m = Module()
        p, R, C, ACC = self.program, self.R, self.C, self.ACC
        wimg, rimg, bimg, entry = self._roms()
        shapes = self.memory_shapes()
        ops = p.ops
        word = data.ArrayLayout(unsigned(8), C)
        sumw = data.ArrayLayout(signed(ACC), C)
        tile = data.ArrayLayout(data.ArrayLayout(signed(8), C), R)
        rtl = data.ArrayLayout(data.StructLayout({"off": self.offw, "lane": self.lanew, "valid": 1}), R)

        # -- memories ----------------------------------------------------------------
        m.submodules.wrom = wrom = Memory(shape=shapes["wrom"][0], depth=shapes["wrom"][1], init=wimg)
        # (the row table is read once per fold: logic, not a block RAM of its own)
        m.submodules.rtrom = rtrom = Memory(shape=shapes["rtrom"][0], depth=shapes["rtrom"][1], init=rimg,
                                            attrs={"rom_style": "logic"})
        m.submodules.brom = brom = Memory(shape=shapes["brom"][0], depth=shapes["brom"][1], init=bimg)
        w_rd, rt_rd, b_rd = wrom.read_port(), rtrom.read_port(), brom.read_port()
        rams = {name: BlockRAM(width=w, depth=d, granularity=g) for name, (w, d, g) in self._ram_specs().items()}
        for name, ram in rams.items():
            m.submodules[name] = ram
        psum = rams["psum"]
        banks = [[rams[f"act{b}_bank{k}"] for k in range(p.copies[b])] for b in range(2)]
        banks.append([rams[f"img_bank{k}"] for k in range(p.copies[IMAGE])])
        # the image buffer's slots: the one ``start`` computes, and the one the host loads meanwhile
        cslot, load_slot = Signal(), Signal()
        slot_bits = ceil_log2(p.image_stride)

        # -- per-op constants: a ROM read combinationally at ``op`` --------------------------
        # (a ROM rather than a case statement on ``op``: event-driven simulators never
        # evaluate a combinational process whose inputs never change, and ``op`` stays 0
        # for the whole first layer). Limits are stored minus one, so the controller
        # compares counters with constants instead of subtracting on its critical path.
        names = ("M_1", "out_w_1", "n_rt_1", "n_ct_1", "wbase", "rtbase", "bbase", "in_pix", "out_pix",
                 "pool", "pool_1", "pool_w_step", "pool_row_step", "out_pix_1", "macs_full", "macs_last_rt", "macs_last_ct",
                 "macs_last_both", "rows_last", "fwd")
        aw = self.aw
        klayout = data.StructLayout({**{n: aw for n in names}, "in_buf": 2, "out_buf": 1, "in_signed": 1, "out_signed": 1, "packed": 1,
                                     "is_last": 1, "is_pool": 1})
        kinit = []
        for i, o in enumerate(ops):
            vals = dict.fromkeys(names, 0)
            # the window walk (pooling ops, and matmuls with fused pooling; a plain matmul is a 1x1 window):
            # next element of a window row +1, next window row +pool_w_step, next window +pool, next
            # row of windows +pool_row_step
            vals.update(in_pix=o.in_pix, out_pix=o.out_pix, out_pix_1=o.out_pix - 1, out_w_1=o.out_shape[1] - 1,
                        pool=o.pool, pool_1=o.pool - 1, pool_w_step=o.in_shape[1] - o.pool + 1,
                        pool_row_step=o.pool * o.in_shape[1] - o.pool * (o.out_shape[1] - 1),
                        n_ct_1=o.n_ct - 1, in_buf=o.in_buf, out_buf=o.out_buf, is_pool=int(isinstance(o, PoolOp)),
                        packed=int(o.in_buf == IMAGE and p.image_pack > 1),
                        in_signed=int(o.in_signed if isinstance(o, MatmulOp) else o.signed),
                        is_last=int(isinstance(o, MatmulOp) and o.last))
            if isinstance(o, MatmulOp):
                rows_last, cols_last = o.rows - (o.n_rt - 1) * R, o.cols - (o.n_ct - 1) * C
                vals.update(M_1=o.positions - 1, n_rt_1=o.n_rt - 1, wbase=self.wbase[i], rtbase=self.rtbase[i],
                            bbase=self.bbase[i], rows_last=rows_last, out_signed=int(o.out["signed"]),
                            macs_full=R * C, macs_last_rt=rows_last * C, macs_last_ct=R * cols_last,
                            macs_last_both=rows_last * cols_last,
                            # a later row tile of the same output position arrives M beats after the
                            # previous one; closer than the partial-sum memory's round trip, forward it
                            fwd=o.positions if o.positions <= PSUM_FORWARD else 0)
            kinit.append(vals)
        m.submodules.oprom = oprom = Memory(shape=klayout, depth=max(2, self.n_ops), init=kinit)
        # the constants are registered: read at the op index of the next cycle (``op_next``, set
        # by the controller), so in every cycle ``kc`` holds the current op's without a ROM on
        # any path
        op = Signal(range(max(2, self.n_ops)))
        op_next = Signal.like(op)
        m.d.comb += op_next.eq(op)
        m.d.sync += op.eq(op_next)
        k_rd = oprom.read_port(domain="comb")
        m.d.comb += k_rd.addr.eq(op_next)
        kc = Signal(klayout)
        m.d.sync += kc.eq(k_rd.data)
        k_ = {n: kc[n] for n in names}
        in_buf, out_buf, in_signed, is_last, is_pool = kc.in_buf, kc.out_buf, kc.in_signed, kc.is_last, kc.is_pool

        # -- counters --------------------------------------------------------------------
        counters = Array(Signal(32, name=f"cnt_{n}") for n in list(COUNTERS) + [f"op{i}" for i in range(self.n_ops)])
        cnt = {n: counters[i] for i, n in enumerate(COUNTERS)}

        # -- controller --------------------------------------------------------------------
        ct, rt, pos, base, obase, tile_i = (Signal(aw, name=n) for n in ("ct", "rt", "pos", "base", "obase", "tile_i"))
        drain = Signal(range(max(self.mm_drain, self.pool_drain) + 1))
        # pooling counters: window (dx, dy), window offset, top-left pixel, output pixel
        dx, dy, woff, pbase, px, q = (Signal(aw, name=n) for n in ("dx", "dy", "woff", "pbase", "px", "q"))
        # ``busy`` is a register, not decoded from the FSM state: the image port reads it
        # before the FSM ever leaves IDLE, when an event-driven simulator may not yet have
        # evaluated a combinational decode (Icarus in SystemVerilog mode does not).
        busy = Signal()
        m.d.comb += self.busy.eq(busy)
        # a matmul beat / a pooling read is issued this cycle: decoded from the FSM state, and ANDed
        # with ``busy`` wherever it starts a pipeline (Icarus leaves a decode X until the state first
        # changes, and an X ``valid`` would flow into the activity counters)
        in_mm, in_pool = Signal(), Signal()
        issue, pissue = in_mm & busy, in_pool & busy
        done = Signal()
        m.d.comb += self.done.eq(done)

        def reset_op_counters():
            return [ct.eq(0), rt.eq(0), pos.eq(0), base.eq(0), obase.eq(0), dx.eq(0), dy.eq(0), woff.eq(0),
                    pbase.eq(0), px.eq(0), q.eq(0)]

        last_rt_now = rt == k_["n_rt_1"] - (1 if self.fault == "ctrl_row_tiles_off_by_one" else 0)
        with m.FSM(name="ctrl"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.comb += op_next.eq(0)
                    m.d.sync += [done.eq(0), busy.eq(1), *reset_op_counters(), tile_i.eq(0),
                                 cslot.eq(load_slot), load_slot.eq(~load_slot)]
                    m.d.sync += [c.eq(0) for c in counters]
                    m.next = "POOL" if isinstance(ops[0], PoolOp) else "MM"
            with m.State("MM"):
                m.d.comb += in_mm.eq(1)
                last_pos = pos == k_["M_1"] - (1 if self.fault == "ctrl_positions_off_by_one" else 0)
                last_ct = ct == k_["n_ct_1"] - (1 if self.fault == "ctrl_col_tiles_off_by_one" else 0)
                with m.If(last_pos):
                    m.d.sync += [pos.eq(0), base.eq(0), pbase.eq(0), px.eq(0), dx.eq(0), dy.eq(0), q.eq(0),
                                 tile_i.eq(tile_i + 1)]
                    with m.If(last_rt_now):
                        m.d.sync += [rt.eq(0), ct.eq(ct + 1), obase.eq(obase + k_["out_pix"])]
                        with m.If(last_ct):
                            m.d.sync += [drain.eq(self.mm_drain - 1), tile_i.eq(0)]
                            m.next = "MM_DRAIN"
                    with m.Else():
                        m.d.sync += rt.eq(rt + 1)
                with m.Else():
                    # the next position: the next element of this pooling window, else the top left
                    # of the next window (a plain convolution's windows are single positions)
                    m.d.sync += pos.eq(pos + 1)
                    with m.If(dx != k_["pool_1"]):
                        m.d.sync += [dx.eq(dx + 1), base.eq(base + 1)]
                    with m.Elif(dy != k_["pool_1"]):
                        m.d.sync += [dx.eq(0), dy.eq(dy + 1), base.eq(base + k_["pool_w_step"])]
                    with m.Else():
                        m.d.sync += [dx.eq(0), dy.eq(0), q.eq(q + 1)]
                        with m.If(px == k_["out_w_1"]):
                            step = k_["pool_row_step"] + (1 if self.fault == "im2col_row_step_off_by_one" else 0)
                            m.d.sync += [px.eq(0), pbase.eq(pbase + step), base.eq(pbase + step)]
                        with m.Else():
                            m.d.sync += [px.eq(px + 1), pbase.eq(pbase + k_["pool"]), base.eq(pbase + k_["pool"])]
            for state in ("MM_DRAIN", "POOL_DRAIN"):
                with m.State(state):
                    with m.If(drain == 0):
                        m.d.sync += reset_op_counters()
                        with m.If(op == self.n_ops - 1):
                            m.d.sync += [done.eq(1), busy.eq(0)]
                            m.next = "IDLE"
                        with m.Else():
                            m.d.comb += op_next.eq(op + 1)
                            with m.Switch(op):
                                for i in range(self.n_ops - 1):
                                    with m.Case(i):
                                        m.next = "POOL" if isinstance(ops[i + 1], PoolOp) else "MM"
                    with m.Else():
                        m.d.sync += drain.eq(drain - 1)
            with m.State("POOL"):
                m.d.comb += in_pool.eq(1)
                last_dx = dx == k_["pool_1"] - (1 if self.fault == "pool_window_short" else 0)
                last_dy = dy == k_["pool_1"]
                with m.If(last_dx):
                    m.d.sync += dx.eq(0)
                    with m.If(last_dy):
                        m.d.sync += [dy.eq(0), woff.eq(0), q.eq(q + 1)]
                        with m.If(q == k_["out_pix_1"]):
                            m.d.sync += [q.eq(0), px.eq(0), pbase.eq(0), ct.eq(ct + 1), obase.eq(obase + k_["out_pix"]),
                                         base.eq(base + k_["in_pix"])]
                            with m.If(ct == k_["n_ct_1"]):
                                m.d.sync += drain.eq(self.pool_drain - 1)
                                m.next = "POOL_DRAIN"
                        with m.Elif(px == k_["out_w_1"]):
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
            for i in range(self.n_ops):  # one comparator each, not a read-modify-write through a mux on ``op``
                with m.If(op == i):
                    m.d.sync += counters[len(COUNTERS) + i].eq(counters[len(COUNTERS) + i] + 1)
        # activity counters add what the previous cycle issued (registered): they settle one
        # cycle after the last issue, long before ``done``
        last_ct_now = ct == k_["n_ct_1"]
        inc = data.StructLayout({"beat": 1, "macs": aw})
        inc_q = Signal(inc)
        # (sampled only while busy: before the first state change an event-driven simulator may
        # not have evaluated the controller's decodes yet)
        with m.If(busy):
            m.d.sync += [inc_q.beat.eq(issue),
                         inc_q.macs.eq(Mux(issue, Mux(last_rt_now, Mux(last_ct_now, k_["macs_last_both"], k_["macs_last_rt"]),
                                                      Mux(last_ct_now, k_["macs_last_ct"], k_["macs_full"])), 0))]
        with m.Else():
            m.d.sync += inc_q.eq(0)
        with m.If(busy):  # (not in the start cycle, where the counters are cleared)
            m.d.sync += [cnt["beats"].eq(cnt["beats"] + inc_q.beat), cnt["macs"].eq(cnt["macs"] + inc_q.macs)]

        # -- matmul feed pipeline (stage k = k cycles after the beat's issue) -----------------
        # 0: row table ROM address; 1: its data (block RAM output) registered; 2: the R
        # activation addresses (base pixel + row offset) registered; 3: bank reads; 4: bank
        # data registered; 5: lane select and sign into ``x``, weight tile read; 6: array.
        # Every block RAM output goes straight into a register: the ECP5's DP16KD has a
        # slow clock-to-output, so no logic may follow it in the same cycle.
        meta = data.StructLayout({"v": 1, "first": 1, "first_rt": 1, "last_rt": 1, "win_first": 1, "win_last": 1,
                                  "pos": aw, "ct": aw, "oaddr": aw,
                                  "waddr": aw, "base": aw, "fwd": PSUM_FORWARD.bit_length()})
        m0 = Signal(meta)
        # the row table entry holds for the whole fold: read on its first beat only
        m.d.comb += [rt_rd.addr.eq(k_["rtbase"] + rt), rt_rd.en.eq(issue & (pos == 0)),
                     m0.v.eq(issue), m0.first.eq(pos == 0), m0.first_rt.eq(rt == 0), m0.last_rt.eq(last_rt_now),
                     m0.win_first.eq((dx == 0) & (dy == 0)),
                     m0.win_last.eq((dx == k_["pool_1"] - (1 if self.fault == "pool_window_short" else 0)) & (dy == k_["pool_1"])),
                     m0.pos.eq(pos), m0.ct.eq(ct), m0.oaddr.eq(obase + q), m0.waddr.eq(k_["wbase"] + tile_i),
                     m0.base.eq(base), m0.fwd.eq(k_["fwd"])]
        feed = [m0]
        for d in range(1, FEED_STAGES + 1):
            nxt = Signal(meta, name=f"meta_f{d}")
            m.d.sync += nxt.eq(feed[-1])
            feed.append(nxt)
        # block RAM outputs land in reset-less registers (a reset would put logic after the RAM),
        # twice: the first beside the RAM, the second carrying the word to its users
        rtv1, rtv = Signal(rtl, reset_less=True), Signal(rtl, reset_less=True)
        m.d.sync += [rtv1.eq(rt_rd.data), rtv.eq(rtv1)]                  # stages 1 -> 2 -> 3
        A = 4                                                              # the bank read's stage
        addr_q = [Signal(aw, name=f"act_addr_{i}") for i in range(R)]
        lane_d = [[Signal(self.lanew, name=f"lane{A + d}_{i}") for i in range(R)] for d in range(READ_LATENCY + 1)]
        rv_d = [[Signal(name=f"rowv{A + d}_{i}") for i in range(R)] for d in range(READ_LATENCY + 1)]
        for i in range(R):
            addr = rtv[i].off + feed[A - 1].base
            lane = rtv[i].lane
            if p.image_pack > 1:
                # the first layer reads the packed image: word = pixel // P, lane = pixel % P
                s_ = p.image_pack.bit_length() - 1
                addr, lane = Mux(kc.packed, addr >> s_, addr), Mux(kc.packed, addr[:s_], lane)
            if self.fault == "act_read_addr_bit1_flip" and i == 3 % R:
                addr = addr ^ 2
            lane = lane ^ 1 if self.fault == "im2col_lane_swap" and C > 1 else lane
            m.d.sync += [addr_q[i].eq(addr), lane_d[0][i].eq(lane), rv_d[0][i].eq(rtv[i].valid)]   # 3 -> A
            for d in range(1, READ_LATENCY + 1):
                m.d.sync += [lane_d[d][i].eq(lane_d[d - 1][i]), rv_d[d][i].eq(rv_d[d - 1][i])]
        X = A + READ_LATENCY                                               # the words' stage: lane select
        # (a buffer kept in one copy gives every row the same word; each row picks its lane)
        words = [[word(banks[b][min(i, len(banks[b]) - 1)].r_data) for i in range(R)] for b in range(3)]
        # the weight tile: read two stages ahead of the array, registered twice
        # (read once per fold, by its first beat: the PEs take the tile on that beat only)
        m.d.comb += [w_rd.addr.eq(feed[FEED_STAGES - 3].waddr),
                     w_rd.en.eq(feed[FEED_STAGES - 3].v & feed[FEED_STAGES - 3].first)]
        w_near, w_in_q = Signal(tile, reset_less=True), Signal(tile, reset_less=True)
        m.d.sync += [w_near.eq(w_rd.data), w_in_q.eq(w_near)]
        # which weights are not zero, registered beside the tile: the PEs gate on it
        nz_layout = data.ArrayLayout(data.ArrayLayout(1, C), R)
        w_nz_q, w_nz = Signal(nz_layout), Signal(nz_layout)
        m.d.sync += [w_nz_q[i][j].eq(w_near[i][j] != 0) for i in range(R) for j in range(C)]
        m.d.comb += w_nz.eq(w_nz_q)
        w_in = Signal(tile)
        m.d.comb += w_in.eq(w_in_q)
        if self.fault == "weight_rows_swapped" and R > 1:
            m.d.comb += [w_in[0].eq(w_in_q[1]), w_in[1].eq(w_in_q[0]), w_nz[0].eq(w_nz_q[1]), w_nz[1].eq(w_nz_q[0])]

        m.submodules.array = arr = SystolicArray(rows=R, cols=C, x_width=9, w_width=8, acc_width=ACC,
                                                 fault=self.fault if self.fault and self.fault.startswith(("pe_", "skew_")) else None)
        for i in range(R):
            lane = lane_d[X - A][i]
            byte = Array(Array(words[b][i][j] for j in range(C))[lane] for b in range(3))[in_buf]
            x = Mux(in_signed, byte.as_signed(), Cat(byte, Const(0, 1)).as_signed())
            x_q = Signal(signed(9), name=f"x_in_{i}")
            m.d.sync += x_q.eq(Mux(rv_d[X - A][i], x, 0))                 # X -> FEED_STAGES
            m.d.comb += arr.x[i].eq(x_q)
        m_in = feed[FEED_STAGES]
        m.d.comb += [arr.valid.eq(m_in.v), arr.load.eq(m_in.first), arr.w.eq(w_in), arr.w_nz.eq(w_nz)]

        # -- metadata delay line to the bottom of the array -------------------------------------
        line = [m_in]
        for d in range(arr.latency):
            nxt = Signal(meta, name=f"meta_d{d + 1}")
            m.d.sync += nxt.eq(line[-1])
            line.append(nxt)
        # aligned with the array output; the partial-sum read (READ_LATENCY ahead); the bias read (its
        # ROM's read, then a register: 2 ahead)
        mA, mRd, mBias = line[-1], line[-1 - READ_LATENCY], line[-3]

        # -- bottom: accumulate, store, requantize/write or keep logits --------------------------
        # The partial sum is read READ_LATENCY cycles ahead, the bias 2 (a ROM small enough for
        # logic, then a register). A later row tile
        # of the same position that comes back within PSUM_FORWARD beats takes the running
        # sum from the forwarding registers instead (its memory write has not landed yet).
        m.d.comb += [psum.r_addr.eq(mRd.pos), psum.r_en.eq(mRd.v & ~mRd.first_rt),
                     b_rd.addr.eq(k_["bbase"] + mBias.ct), b_rd.en.eq(mBias.v & mBias.first_rt)]
        psum_q, bias_q = sumw(psum.r_data), Signal(sumw, reset_less=True)
        m.d.sync += bias_q.eq(b_rd.data)
        total = Signal(sumw)
        recent = [Signal(sumw, name=f"total_q{d + 1}") for d in range(PSUM_FORWARD)]   # totals of the last beats
        m.d.sync += recent[0].eq(total)
        for d in range(1, PSUM_FORWARD):
            m.d.sync += recent[d].eq(recent[d - 1])
        stored = psum_q
        if self.fault != "psum_not_forwarded":
            for d in reversed(range(PSUM_FORWARD)):
                stored = Mux(mA.fwd == d + 1, recent[d], stored)
        prev = Signal(sumw)
        bias_in = 0 if self.fault == "bias_dropped" else bias_q
        psum_in = 0 if self.fault == "psum_dropped" else stored
        m.d.comb += prev.eq(Mux(mA.first_rt, bias_in, psum_in))
        for j in range(C):
            m.d.comb += total[j].eq(prev[j] + arr.y[j])
        if self.fault == "acc_stuck1_bit12" and C > 1:
            m.d.comb += total[1].eq((prev[1] + arr.y[1]) | (1 << 12))
        mB = Signal(meta)
        m.d.sync += mB.eq(mA)
        m.d.comb += [psum.w_addr.eq(mB.pos), psum.w_data.eq(recent[0]), psum.w_en.eq(mB.v & ~mB.last_rt)]

        logits = Array(Signal(signed(ACC), name=f"logit{i}") for i in range(p.n_logits))
        # the host port: one registered read of the register bank (logits sign-extended, then counters)
        bank = Array([*(l.as_signed() for l in logits), *counters])
        m.d.sync += self.csr_data.eq(bank[self.csr_addr])
        # requantization in two stages: ReLU and rounding, then shift and saturation
        rounded = Signal(data.ArrayLayout(signed(ACC + 1), C))
        rnd_q = Signal.like(rounded)
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
                            m.d.comb += [rounded[j].eq(_round(recent[0][j], o.acc_frac, o.out, self.fault)),
                                         out_word[j].eq(_saturate(rnd_q[j], o.acc_frac, o.out, self.fault))]
        mC = Signal(meta)
        m.d.sync += [rnd_q.eq(rounded), mC.eq(mB)]
        # the write request is registered whole (buffer included): it lands in the cycle the
        # next op may already be issuing
        mD, word_q = Signal(meta), Signal(word)
        m.d.sync += [word_q.eq(out_word), mD.eq(mC)]
        # fused max pooling: the window's positions are consecutive beats of the last row tile;
        # keep their running maximum and write it with the window's last one (a plain
        # convolution's window is one position, so every word is written)
        run_max, new_max = Signal(word), Signal(word)
        for j in range(C):
            m.d.comb += new_max[j].eq(Mux(mD.win_first | _bigger(word_q[j], run_max[j], kc.out_signed, self.fault),
                                          word_q[j], run_max[j]))
        with m.If(mD.v & mD.last_rt):
            m.d.sync += run_max.eq(new_max)
        mm_fire = mD.v & mD.last_rt & mD.win_last & ~is_last & ~is_pool

        # -- pooling: 0 address registered; 1 bank read; 2 data registered; 3 running max,
        # the window's result registered; 4 written --------------------------------------------
        pmeta = data.StructLayout({"v": 1, "first": 1, "last": 1, "oaddr": aw})
        p1 = Signal(pmeta)
        paddr1 = Signal(aw)
        m.d.sync += [paddr1.eq(base + pbase + woff), p1.v.eq(pissue), p1.first.eq((dx == 0) & (dy == 0)),
                     p1.last.eq((dx == k_["pool_1"] - (1 if self.fault == "pool_window_short" else 0)) & (dy == k_["pool_1"])),
                     p1.oaddr.eq(obase + q)]
        p_d = [p1]
        for d in range(READ_LATENCY):
            nxt = Signal(pmeta, name=f"pmeta{d + 2}")
            m.d.sync += nxt.eq(p_d[-1])
            p_d.append(nxt)
        p3 = p_d[-1]                                    # the word read at 1 is here
        pdata = Signal(word)
        m.d.comb += pdata.eq(Array(banks[b][0].r_data for b in range(3))[in_buf])
        mx = Signal(word)
        pmax = Signal(word)
        for j in range(C):
            m.d.comb += pmax[j].eq(Mux(p3.first | _bigger(pdata[j], mx[j], in_signed, self.fault), pdata[j], mx[j]))
        with m.If(p3.v):
            m.d.sync += mx.eq(pmax)
        pool_fire = p3.v & p3.last

        # -- activation bank reads: the matmul feed's addresses, or the pooling address --------
        # (only the input buffer is read: one word per beat from a buffer kept in one copy, the
        # word of each row this beat uses from a replicated one; the image in the computed slot)
        for b in range(3):
            for i, bank in enumerate(banks[b]):
                row_en = feed[A].v & rv_d[0][i] & (in_buf == b)
                addr = Mux(p1.v, paddr1, addr_q[i]) if i == 0 else addr_q[i]
                m.d.comb += [bank.r_addr.eq(Cat(addr[:slot_bits], cslot) if b == IMAGE else addr),
                             bank.r_en.eq(row_en | (p1.v & (in_buf == b)) if i == 0 else row_en)]

        # -- activation writes: matmul and pooling outputs; the image load ------------------------
        # One registered write request drives every copy of the output buffer's write port straight
        # from flip-flops: address, word and the buffer (whole words).
        wreq = data.StructLayout({"addr": aw, "data": word, "en0": 1, "en1": 1})
        w_q = Signal(wreq)
        with m.If(mm_fire | pool_fire):
            waddr = Mux(pool_fire, p3.oaddr, mD.oaddr ^ 1 if self.fault == "act_write_addr_bit0_flip" else mD.oaddr)
            m.d.sync += [w_q.addr.eq(waddr), w_q.data.eq(Mux(pool_fire, pmax, new_max)),
                         w_q.en0.eq(~out_buf), w_q.en1.eq(out_buf)]
        with m.Else():
            m.d.sync += [w_q.en0.eq(0), w_q.en1.eq(0)]
        for b in range(2):
            for bank in banks[b]:
                m.d.comb += [bank.w_addr.eq(w_q.addr), bank.w_data.eq(w_q.data),
                             bank.w_en.eq(Mux(w_q.en1 if b else w_q.en0, -1, 0))]
        # the image load writes one lane of the load slot (registered: it lands a cycle after ``img_we``),
        # whether or not an inference is running on the other slot
        ireq = data.StructLayout({"addr": slot_bits + 1, "data": word, "en": C})
        i_q = Signal(ireq)
        if p.image_pack > 1:   # packed: pixel p to word p // P, lane p % P
            s_ = p.image_pack.bit_length() - 1
            iaddr, ilane = self.img_pixel >> s_, self.img_pixel[:s_]
        else:
            iaddr, ilane = self.img_pixel, self.img_chan
        iaddr = Cat(iaddr, Const(0, slot_bits))[:slot_bits]   # (zero-extended to the slot's width)
        m.d.sync += [i_q.addr.eq(Cat(iaddr, load_slot)), i_q.data.eq(Cat(*[self.img_data] * C)),
                     i_q.en.eq(Mux(self.img_we, 1 << ilane, 0))]
        for bank in banks[IMAGE]:
            m.d.comb += [bank.w_addr.eq(i_q.addr), bank.w_data.eq(i_q.data), bank.w_en.eq(i_q.en)]

        # -- memory activity, counted at the ports: every read enable and write enable ------------
        # (while busy; the image load is the host's transfer, not part of an inference, and is not
        # counted: it may run during the previous image's inference)
        def total(bits):
            return sum((b.as_unsigned() for b in bits), Const(0, 1))

        ports = {"act_reads": [bank.r_en for bank in banks[0] + banks[1] + banks[IMAGE]],
                 "act_writes": [bank.w_en.any() for bank in banks[0] + banks[1]],
                 "weight_reads": [w_rd.en], "bias_reads": [b_rd.en], "table_reads": [rt_rd.en],
                 "psum_reads": [psum.r_en], "psum_writes": [psum.w_en.any()]}
        with m.If(busy):
            m.d.sync += [cnt[k].eq(cnt[k] + total(v)) for k, v in ports.items()]
            # and in the array: multiplies done, multiplies gated on a zero weight, weight register writes
            m.d.sync += [cnt["mults"].eq(cnt["mults"] + arr.mults),
                         cnt["mults_gated"].eq(cnt["mults_gated"] + arr.gated),
                         cnt["wreg_writes"].eq(cnt["wreg_writes"] + arr.wreg_writes)]
        return m


def _bigger(a, b, signed_, fault: str | None = None):
    """``a > b`` for two bytes, compared as signed or unsigned by ``signed_`` (max pooling's comparison)."""
    bigger = Mux(signed_, a.as_signed() > b.as_signed(), a > b)
    return ~bigger if fault == "pool_min" else bigger


def _round(acc, acc_frac: int, out: dict, fault: str | None = None):
    """ReLU, then half an output LSB added: the first half of requantization (one pipeline stage)."""
    v = Mux(acc[-1], 0, acc) if out["relu"] else acc   # the sign bit: no comparator on the path
    shift = acc_frac - out["frac"] + (1 if fault == "requant_shift_plus_one" else 0)
    if shift > 0 and fault != "requant_no_rounding":
        return v + (1 << (shift - 1))
    return v


def _saturate(rounded, acc_frac: int, out: dict, fault: str | None = None):
    """The rounded value shifted to ``out['frac']`` and saturated to ``out['bits']``: the second half."""
    shift = acc_frac - out["frac"] + (1 if fault == "requant_shift_plus_one" else 0)
    q = rounded >> shift if shift > 0 else rounded << (-shift)
    if out["signed"] or fault == "requant_signed_range":
        lo, hi = -(1 << (out["bits"] - 1)), (1 << (out["bits"] - 1)) - 1
    else:
        lo, hi = 0, (1 << out["bits"]) - 1
    if fault == "requant_no_saturation":
        return q[:8]
    # range checks on the bits above the output width (no comparators): q fits when those bits
    # are all zero (unsigned) or all equal to the sign (signed)
    sign = q[-1]
    top = q[out["bits"] - (1 if lo < 0 else 0):]
    over = ~sign & top.any()
    under = sign & ~top.all() if lo < 0 else sign
    sat = Mux(over, hi, Mux(under, lo, q))
    return sat[:8]


def _requant(acc, acc_frac: int, out: dict, fault: str | None = None):
    """ReLU, round half up to ``out['frac']``, saturate to ``out['bits']``: the contract's rule, as logic."""
    return _saturate(_round(acc, acc_frac, out, fault), acc_frac, out, fault)
