"""Everything the accelerator's blocks derive from a program: widths, ROM images and the layouts they exchange.

One object, built once per accelerator and handed to each block, so that the
controller, feeder, write-back and the top agree on every width without
recomputing it.
"""

from __future__ import annotations

from amaranth import signed, unsigned
from amaranth.lib import data
from amaranth.utils import ceil_log2

from prunehw.hw.block_ram import READ_LATENCY
from prunehw.hw.program import IMAGE, MatmulOp, PoolOp, Program

__all__ = ["Plan", "PSUM_FORWARD"]

#: A later row tile of an output position that returns within this many beats is forwarded from the
#: bottom's registers: the partial-sum memory is read READ_LATENCY cycles ahead and written one
#: cycle after the sum, so a write is seen only by a read issued at least one cycle later.
PSUM_FORWARD = READ_LATENCY + 1

#: Per-op constants the controller reads from its op ROM (limits stored minus one, so the controller
#: compares counters with constants instead of subtracting on its critical path).
OP_FIELDS = ("M_1", "out_w_1", "n_rt_1", "n_ct_1", "wbase", "rtbase", "bbase", "in_pix", "out_pix",
             "pool", "pool_1", "pool_w_step", "pool_row_step", "out_pix_1", "macs_full", "macs_last_rt", "macs_last_ct",
             "macs_last_both", "rows_last", "fwd")


def _pack(values, width: int) -> int:
    out = 0
    for i, v in enumerate(values):
        out |= (int(v) & ((1 << width) - 1)) << (i * width)
    return out


class Plan:
    """Sizes, ROM images and shared layouts of the accelerator for ``program``.

    Attributes
    ----------
    R, C, ACC : int
        Array rows and columns; accumulator width (the contract's widest plus 2).
    aw : int
        Width of every controller counter, address and per-op constant, derived from the largest value any of
        them takes (one past the end of a buffer, of the weight tiles, ...), so nothing wraps.
    offw, lanew : int
        Widths of a row table entry's word offset and lane.
    wimg, rimg, bimg : list of int
        Weight tile, row table and bias ROM images (one word per tile / row tile / column tile).
    op_values : list of dict
        Per op, the values of :attr:`op_layout`'s fields.
    word, sums, tile, tile_nz, beat, op_layout : Layout
        An activation word (C bytes), a row of C sums, a weight tile and its non-zero flags, a matmul
        beat's metadata (:attr:`beat`), the per-op constants.
    """

    def __init__(self, program: Program):
        if not isinstance(program, Program):
            raise TypeError(f"program must be a Program, not {program!r}")
        p = self.program = program
        R, C = self.R, self.C = p.rows, p.cols
        self.ACC = p.acc_bits + 2
        if self.ACC > 32:
            raise ValueError(f"logits of {self.ACC} bits do not fit the host port's 32-bit words (accumulators up to 30 bits)")
        self.n_ops = len(p.ops)
        tiles, table, bias = [], [], []
        wbase, rtbase, bbase = [], [], []
        for op in p.ops:
            wbase.append(len(tiles))
            rtbase.append(len(table))
            bbase.append(len(bias))
            if isinstance(op, MatmulOp):
                tiles += op.tiles
                table += op.row_table
                bias += op.bias
        self.offw = ceil_log2(max(max(p.buf_depth), 2)) + 1
        largest = max(*p.buf_depth, 2 * p.image_stride, len(tiles), len(table), len(bias), R * C, R * max(p.buf_depth),
                      *(o.positions * o.n_rt * o.n_ct for o in p.matmuls()))
        self.aw = ceil_log2(largest + 2)
        self.lanew = max(1, ceil_log2(C))
        self.slot_bits = ceil_log2(p.image_stride)
        #: the partial-sum memory holds a row of C sums per output position of the largest fold
        self.psum_words = max(max((o.positions for o in p.matmuls()), default=1), 2)
        self.entry = self.offw + self.lanew + 1
        self.wimg = [_pack([_pack(t[i], 8) for i in range(R)], 8 * C) for t in tiles] or [0]
        self.rimg = [_pack([off | (lane << self.offw) | (v << (self.offw + self.lanew)) for off, lane, v in row], self.entry)
                     for row in table] or [0]
        self.bimg = [_pack(b, self.ACC) for b in bias] or [0]

        self.word = data.ArrayLayout(unsigned(8), C)
        self.sums = data.ArrayLayout(signed(self.ACC), C)
        self.tile = data.ArrayLayout(data.ArrayLayout(signed(8), C), R)
        self.tile_nz = data.ArrayLayout(data.ArrayLayout(1, C), R)
        self.table_row = data.ArrayLayout(data.StructLayout({"off": self.offw, "lane": self.lanew, "valid": 1}), R)
        aw = self.aw
        #: a matmul beat (one output position of one fold) as it travels from the controller to the bottom
        self.beat = data.StructLayout({"v": 1, "first": 1, "first_rt": 1, "last_rt": 1, "win_first": 1, "win_last": 1,
                                       "pos": aw, "ct": aw, "oaddr": aw, "waddr": aw, "base": aw,
                                       "fwd": PSUM_FORWARD.bit_length()})
        self.op_layout = data.StructLayout({**{n: aw for n in OP_FIELDS}, "in_buf": 2, "out_buf": 1, "in_signed": 1,
                                            "out_signed": 1, "packed": 1, "is_last": 1, "is_pool": 1})
        self.op_values = [self._op_values(i, o, wbase[i], rtbase[i], bbase[i]) for i, o in enumerate(p.ops)]

    def _op_values(self, i, o, wbase, rtbase, bbase) -> dict:
        p, R, C = self.program, self.R, self.C
        vals = dict.fromkeys(OP_FIELDS, 0)
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
            vals.update(M_1=o.positions - 1, n_rt_1=o.n_rt - 1, wbase=wbase, rtbase=rtbase, bbase=bbase,
                        rows_last=rows_last, out_signed=int(o.out["signed"]),
                        macs_full=R * C, macs_last_rt=rows_last * C, macs_last_ct=R * cols_last,
                        macs_last_both=rows_last * cols_last,
                        # a later row tile of the same output position arrives M beats after the
                        # previous one; closer than the partial-sum memory's round trip, forward it
                        fwd=o.positions if o.positions <= PSUM_FORWARD else 0)
        return vals
