"""Everything the accelerator's blocks derive from a program: widths, ROM images and the layouts they exchange.

One object, built once per accelerator and handed to each block, so that the
controller, feeder, write-back and the top agree on every width without
recomputing it.
"""

from __future__ import annotations

from amaranth import signed, unsigned
from amaranth.lib import data
from amaranth.utils import ceil_log2

from prunehw.hw.gateware.block_ram import READ_LATENCY
from prunehw.hw.compile.program import IMAGE, MatmulOp, PoolOp, Program

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
#: added when some convolution is strided / padded (a design without either keeps the plain walk)
STRIDE_FIELDS = ("stride", "win_step")
PAD_FIELDS = ("pad_t", "pad_l", "h_pt", "w_pl")
AVG_FIELDS = ("avg", "avg_n")
#: added when some op is grouped (a depthwise convolution: each column tile has row tiles of its own): the step
#: of the row table's base from one column tile to the next (its row tiles; 0 for the other ops)
GROUP_FIELDS = ("rt_step",)
#: added when some pooling window or some convolution's stride is not square: the window height's limit
#: (``pool_1`` is then its width's) and the step of the window's input row from one row of windows to the next
#: (window height times vertical stride)
TALL_FIELDS = ("poolh_1", "winh_step")
#: added when some convolution strides otherwise down than across and the walk tracks the position's input row
#: (a padded design): the vertical stride (``stride`` is then the horizontal one)
STRIDE_H_FIELDS = ("stride_h",)


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
    wwidths, wimgs, wrom_names : list of int, dict, dict
        The weight widths the layers use, and per width its weight ROM's image (one word per tile) and name.
    rimg, bimg : list of int
        Row table and bias ROM images (one word per row tile / column tile).
    op_values : list of dict
        Per op, the values of :attr:`op_layout`'s fields.
    wbits, abits : int
        The widest layer's weight width (the array's weight operand) and a ping-pong activation buffer's lane width.
    word, sums, tile, tile_nz, beat, op_layout : Layout
        An activation word as the datapath carries it (C bytes; a narrower buffer's lanes are widened on the
        way), a row of C sums, a weight tile and its non-zero flags, a matmul beat's metadata (:attr:`beat`),
        the per-op constants.
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
        #: one weight ROM per weight width the layers use (narrowest first), R x C weights of that width a word
        #: (two 4-bit weights a byte); a layer's tiles sit in the ROM of its width, ``wsel`` picks it
        self.wwidths = sorted({o.weight_bits for o in p.matmuls()}) or [8]
        wb = self.wbits = max(self.wwidths)
        #: each weight ROM's name in the feeder (``wrom``, or ``wrom_w<bits>`` when the layers' widths differ)
        self.wrom_names = {b: f"wrom_w{b}" if len(self.wwidths) > 1 else "wrom" for b in self.wwidths}
        tiles = {b: [] for b in self.wwidths}
        table, bias = [], []
        wbase, rtbase, bbase, wsel = [], [], [], []
        for op in p.ops:
            b = op.weight_bits if isinstance(op, MatmulOp) else wb
            wbase.append(len(tiles[b]))
            wsel.append(self.wwidths.index(b))
            rtbase.append(len(table))
            bbase.append(len(bias))
            if isinstance(op, MatmulOp):
                tiles[b] += op.tiles
                table += op.row_table
                bias += op.bias
        # a row's word offset (a packed image's: pixel offset), negative for a tap on top or left padding: wide
        # enough for every offset of the program, with a sign bit
        reach = max((abs(off) for o in p.matmuls() for row in o.row_table for off, _, _ in row), default=0)
        self.offw = max(ceil_log2(max(max(p.buf_depth), 2)) + 1, reach.bit_length() + 1)
        largest = max(*p.buf_depth, 2 * p.image_stride, *map(len, tiles.values()), len(table), len(bias), R * C,
                      R * max(p.buf_depth), *(o.positions * o.n_rt * o.n_ct for o in p.matmuls()))
        self.aw = ceil_log2(largest + 2)
        self.lanew = max(1, ceil_log2(C))
        self.slot_bits = ceil_log2(p.image_stride)
        #: the partial-sum memory holds a row of C sums per output position of the largest fold
        self.psum_words = max(max((o.positions for o in p.matmuls()), default=1), 2)
        mm = p.matmuls()
        #: a strided convolution steps its base pixel by its stride (else by 1, as the plain design does)
        self.strided = any(max(o.stride) > 1 for o in mm)
        #: some convolution's taps fall on zero padding: each row entry then also holds its tap (ky, kx), checked
        #: against the map's edges at the position; a row on the padding reads nothing and feeds a zero
        self.padded = any(o.padded for o in mm)
        self.kb = max(1, ceil_log2(max((max(o.kernel) for o in mm), default=1))) if self.padded else 0
        self.entry = self.offw + self.lanew + 1 + 2 * self.kb
        taps = [t for o in p.ops if isinstance(o, MatmulOp) for t in o.row_taps]
        mask = (1 << self.offw) - 1          # (an offset onto the top or left padding is negative)

        def entry(e, tap) -> int:
            (off, lane, v), (ky, kx) = e, tap
            word = (off & mask) | (lane << self.offw) | (v << (self.offw + self.lanew))
            return word | (ky << (self.offw + self.lanew + 1)) | (kx << (self.offw + self.lanew + 1 + self.kb)) \
                if self.padded else word

        #: the ping-pong buffers' lane width (the image's lanes are bytes); the datapath carries bytes
        self.abits = p.act_bits
        self.wimgs = {b: [_pack([_pack(t[i], b) for i in range(R)], b * C) for t in ts] or [0] for b, ts in tiles.items()}
        self.rimg = [_pack([entry(e, tap) for e, tap in zip(row, row_taps)], self.entry)
                     for row, row_taps in zip(table, taps)] or [0]
        self.bimg = [_pack(b, self.ACC) for b in bias] or [0]

        self.word = data.ArrayLayout(unsigned(8), C)
        self.sums = data.ArrayLayout(signed(self.ACC), C)
        self.tile = data.ArrayLayout(data.ArrayLayout(signed(wb), C), R)
        self.tile_nz = data.ArrayLayout(data.ArrayLayout(1, C), R)
        tap = {"ky": self.kb, "kx": self.kb} if self.padded else {}
        self.table_row = data.ArrayLayout(data.StructLayout({"off": self.offw, "lane": self.lanew, "valid": 1, **tap}), R)
        aw = self.aw
        #: a matmul beat (one output position of one fold) as it travels from the controller to the bottom;
        #: with padding it carries the position's input row and column (``iy``, ``ix``: output y, x times stride)
        self.beat = data.StructLayout({"v": 1, "first": 1, "first_rt": 1, "last_rt": 1, "win_first": 1, "win_last": 1,
                                       "pos": aw, "ct": aw, "oaddr": aw, "waddr": aw, "base": aw,
                                       "fwd": PSUM_FORWARD.bit_length(), **({"iy": aw, "ix": aw} if self.padded else {})})
        #: some op (a depthwise convolution) has row tiles of its own per column tile
        self.grouped = any(o.grouped for o in mm)
        #: some op adds a residual input at its write-back (read from ``short_buf``); then the design has a third
        #: activation buffer where the program uses one, and the shifts that align each add's inputs
        self.residual = any(o.add for o in mm)
        self.add_shifts = sorted({max(f["frac"] for f in o.add["input"]) - f["frac"] for o in mm if o.add
                                  for f in o.add["input"]}) or [0]
        self.buffers = (0, 1, IMAGE, 3)[:len(p.buf_depth)]
        #: some pooling averages: each op says whether its pooling does, and over how many values (``avg_n``)
        self.averaged = any(o.pool_avg if isinstance(o, MatmulOp) else o.avg for o in p.ops)
        #: some pooling window or stride is not square: the walk then has a limit of its own for the window's rows
        #: and a step of its own from one row of windows to the next
        uneven = any(o.stride[0] != o.stride[1] for o in mm)
        self.nonsquare = uneven or any(o.window[0] != o.window[1] for o in p.ops)
        #: the position's input row steps by a vertical stride of its own (padding tracks it)
        self.tall_stride = self.padded and uneven
        #: the window sizes the poolings average over (only those get a divider)
        self.avg_sizes = sorted({o.window[0] * o.window[1] for o in p.ops
                                 if (o.pool_avg if isinstance(o, MatmulOp) else o.avg)})
        #: some pooling divides by a window size that is not a power of two (a multiplication by its reciprocal,
        #: not a shift): the window's sum is then registered before its division, which is pipelined, more stages
        #: after the word (``writeback.DIVIDE_STAGES``)
        self.divides = any(n & (n - 1) for n in self.avg_sizes)
        self.op_fields = OP_FIELDS + (("wsel",) if len(self.wwidths) > 1 else ()) + (STRIDE_FIELDS if self.strided else ()) \
            + (PAD_FIELDS if self.padded else ()) + (AVG_FIELDS if self.averaged else ()) \
            + (TALL_FIELDS if self.nonsquare else ()) + (GROUP_FIELDS if self.grouped else ()) \
            + (STRIDE_H_FIELDS if self.tall_stride else ())
        self.op_layout = data.StructLayout({**{n: aw for n in self.op_fields}, "in_buf": 2,
                                            "out_buf": 2 if len(self.buffers) > 3 else 1, "in_signed": 1,
                                            "out_signed": 1, "packed": 1, "is_last": 1, "is_pool": 1,
                                            **({"add_en": 1, "short_buf": 2} if self.residual else {})})
        self.op_values = [self._op_values(i, o, wbase[i], rtbase[i], bbase[i]) for i, o in enumerate(p.ops)]
        if len(self.wwidths) > 1:
            for vals, sel in zip(self.op_values, wsel):
                vals["wsel"] = sel

    def _op_values(self, i, o, wbase, rtbase, bbase) -> dict:
        p, R, C = self.program, self.R, self.C
        vals = dict.fromkeys(self.op_fields, 0)
        # the window walk (pooling ops, and matmuls with fused pooling; a plain matmul is a 1x1 window) over
        # base pixels sw apart across and sh rows apart down ((sh, sw): a convolution's strides, else 1): next
        # element of a window row +sw, next window row +pool_w_step, next window +win_step (pool * sw), next
        # row of windows +pool_row_step
        sh, s = o.stride if isinstance(o, MatmulOp) else (1, 1)
        w, (PH, P), ow = o.in_shape[1], o.window, o.out_shape[1]      # (P: the window's width)
        vals.update(in_pix=o.in_pix, out_pix=o.out_pix, out_pix_1=o.out_pix - 1, out_w_1=ow - 1,
                    pool=P, pool_1=P - 1, pool_w_step=sh * w - (P - 1) * s,
                    pool_row_step=PH * sh * w - P * s * (ow - 1),
                    n_ct_1=o.n_ct - 1, in_buf=o.in_buf, out_buf=o.out_buf, is_pool=int(isinstance(o, PoolOp)),
                    packed=int(o.in_buf == IMAGE and p.image_pack > 1),
                    in_signed=int(o.in_signed if isinstance(o, MatmulOp) else o.signed),
                    is_last=int(isinstance(o, MatmulOp) and o.last))
        if isinstance(o, MatmulOp):
            rows_last, cols_last = o.rows - (o.n_rt - 1) * R, o.cols - (o.n_ct - 1) * C
            if o.grouped:     # a fold's useful products: its diagonal (C, or the last column tile's columns)
                macs = dict(macs_full=C, macs_last_rt=C, macs_last_ct=cols_last, macs_last_both=cols_last)
            else:             # its tile's rows times columns
                macs = dict(macs_full=R * C, macs_last_rt=rows_last * C, macs_last_ct=R * cols_last,
                            macs_last_both=rows_last * cols_last)
            vals.update(M_1=o.positions - 1, n_rt_1=o.n_rt - 1, wbase=wbase, rtbase=rtbase, bbase=bbase,
                        rows_last=rows_last, out_signed=int(o.out["signed"]), **macs,
                        # a later row tile of the same output position arrives M beats after the
                        # previous one; closer than the partial-sum memory's round trip, forward it
                        fwd=o.positions if o.positions <= PSUM_FORWARD else 0)
        if self.strided:
            vals.update(stride=s, win_step=P * s)
        if self.nonsquare:
            vals.update(poolh_1=PH - 1, winh_step=PH * sh)
        if self.tall_stride:
            vals.update(stride_h=sh)
        if self.grouped:
            vals.update(rt_step=o.n_rt if isinstance(o, MatmulOp) and o.grouped else 0)
        if self.residual:
            add = isinstance(o, MatmulOp) and o.add is not None
            vals.update(add_en=int(add), short_buf=o.short_buf if add else 0)
        if self.averaged:
            avg = o.pool_avg if isinstance(o, MatmulOp) else o.avg
            vals.update(avg=int(avg), avg_n=PH * P if avg else 0)
        if self.padded and isinstance(o, MatmulOp):
            # a row's tap (ky, kx) at input row iy = y * s is on the map when pad_t <= iy + ky < h + pad_t
            # (likewise for columns); a layer without padding gets bounds no position reaches
            h, pt, pl = o.in_shape[0], *o.pad
            vals.update(pad_t=pt, pad_l=pl, h_pt=h + pt, w_pl=w + pl)
        return vals
