"""An R x C weight-stationary systolic array with input skew and output deskew."""

from amaranth import Const, Module, Signal, signed
from amaranth.utils import ceil_log2
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from prunehw.hw.gateware.pe import PSUM_DELAY, ProcessingElement
from prunehw.hw.gateware.taps import PASS

__all__ = ["SystolicArray"]

#: Terms (a weight register group's enable times its bytes) per first-stage sum of the weight-write count
WREG_PART = 6


class SystolicArray(wiring.Component):
    """Computes ``y[j] = sum_i x[i] * W[i][j]`` for one beat per cycle, W stationary per fold.

    Row i receives ``x[i]`` (and the fold's weight row on a ``load`` beat)
    delayed by i cycles; activations move right one PE per cycle, partial sums
    move down; column j's sum leaves the bottom PE ``R - 1 + j + PSUM_DELAY + 1``
    cycles after the beat enters and is delayed by C - 1 - j more, so the
    outputs of a beat are aligned again.

    Parameters
    ----------
    rows, cols : int
        R (reduction) and C (output) size.
    x_width, w_width, acc_width : int
        Signed widths of activations, weights and partial sums.

    Members
    -------
    valid, load : In(1)
        Beat valid; first beat of a fold (PEs take the new weights).
    x : In(ArrayLayout(signed(x_width), rows))
    w : In(ArrayLayout(ArrayLayout(signed(w_width), cols), rows))
        The fold's weight tile, sampled on ``load`` beats.
    w_nz : In(ArrayLayout(ArrayLayout(1, cols), rows))
        Which of the tile's weights are not zero (computed upstream, so that a
        PE's gate is one LUT from registers); travels with the weights.
    out_valid : Out(1)
    y : Out(ArrayLayout(signed(acc_width), cols))
        Latency: ``rows + cols - 1 + PSUM_DELAY`` cycles from ``valid`` to ``out_valid``.
    mults, gated : Out(range(rows * cols + 1))
        Activity, counted where it happens: how many PEs multiplied, and how many held their
        operand for a zero weight, in the cycle three before (each PE's flag, each row's sum and
        the total are registered).
    wreg_writes : Out(range(...))
        Weight registers (bytes) written in the cycle three before: the weight skew and delay
        registers are written only when a load beat passes them (their clock enable), the PEs'
        weight registers on the load beat itself.
    """

    def __init__(self, *, rows: int, cols: int, x_width: int = 9, w_width: int = 8, acc_width: int = 32,
                 taps=PASS):
        for name, v in (("rows", rows), ("cols", cols)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")
        self.rows, self.cols = rows, cols
        self.taps = taps   # the mutation campaign's hook (hw/gateware/taps.py)
        self.x_width, self.w_width, self.acc_width = x_width, w_width, acc_width
        super().__init__({
            "valid": In(1), "load": In(1),
            "x": In(data.ArrayLayout(signed(x_width), rows)),
            "w": In(data.ArrayLayout(data.ArrayLayout(signed(w_width), cols), rows)),
            "w_nz": In(data.ArrayLayout(data.ArrayLayout(1, cols), rows)),
            "out_valid": Out(1),
            "y": Out(data.ArrayLayout(signed(acc_width), cols)),
            "mults": Out(range(rows * cols + 1)), "gated": Out(range(rows * cols + 1)),
            "wreg_writes": Out(range(self.wreg_per_fold() + 1)),
        })

    def wreg_per_fold(self) -> int:
        """Weight registers (bytes) one fold's load writes: R x C in the PEs, C per skew stage of row i
        (i of them), and C - 1 - d for delay stage d of a row (lanes j > d)."""
        R, C = self.rows, self.cols
        return R * C + C * R * (R - 1) // 2 + R * C * (C - 1) // 2

    def _lanes(self, n: int) -> data.StructLayout:
        """``n`` lanes of weights and their non-zero flags, one register."""
        return data.StructLayout({"w": data.ArrayLayout(signed(self.w_width), n), "nz": data.ArrayLayout(1, n)})

    @property
    def latency(self) -> int:
        return self.rows + self.cols - 1 + PSUM_DELAY

    def elaborate(self, platform):
        m = Module()
        R, C = self.rows, self.cols
        # activations travel the rows as wide as the target's multiplier reads them (sign-extended once, here)
        x_port = max(self.x_width, getattr(platform, "multiplier_operand_bits", 0))
        pes = [[ProcessingElement(x_width=self.x_width, w_width=self.w_width, acc_width=self.acc_width,
                                  x_port_width=x_port, taps=self.taps, where={"row": i, "col": j, "rows": R, "cols": C})
                for j in range(C)] for i in range(R)]
        for i in range(R):
            for j in range(C):
                m.submodules[f"pe_{i}_{j}"] = pes[i][j]
        writes = []     # (enable, bytes written) of every weight register group
        for i in range(R):
            # input skew: row i sees its beat i cycles late; weights W[i][j] are delayed j more
            # (one per PE passed), riding with the load beat; a weight register is written only
            # when the load beat passes it
            # (each stage's weights and flags are one register of their own, a stage's lanes sharing its
            # enable: the same flip-flops, and far fewer processes for a simulator to evaluate)
            x, v, ld = self.x[i], self.valid, self.load
            wrow = [self.w[i][j] for j in range(C)]
            nzrow = [self.w_nz[i][j] for j in range(C)]
            for d in range(self.taps("array.skew_depth", i, row=i, rows=R, cols=C)):
                x2, v2, ld2 = Signal.like(pes[i][0].x_in, name=f"skew_x_{i}_{d}"), Signal(name=f"skew_v_{i}_{d}"), Signal(name=f"skew_l_{i}_{d}")
                stage = Signal(self._lanes(C), name=f"skew_w_{i}_{d}")
                m.d.sync += [x2.eq(x), v2.eq(v), ld2.eq(ld)]
                with m.If(v & ld):
                    m.d.sync += [stage.w[j].eq(wrow[j]) for j in range(C)] + [stage.nz[j].eq(nzrow[j]) for j in range(C)]
                writes.append((v & ld, C))
                x, v, ld = x2, v2, ld2
                wrow, nzrow = [stage.w[j] for j in range(C)], [stage.nz[j] for j in range(C)]
            # weight for column j arrives j cycles after column 0's: lane j passes j delay stages; stage d
            # holds lanes d + 1 .. C - 1 of what entered the row d + 1 cycles ago, written when the load
            # beat that carried it reaches PE (i, d)
            lanes_w, lanes_nz = [[w] for w in wrow], [[nz] for nz in nzrow]   # lane j: its value after 0, 1, .. stages
            for d in range(C - 1):
                stage = Signal(self._lanes(C - 1 - d), name=f"wdel_{i}_{d}")
                with m.If(pes[i][d].valid_in & pes[i][d].load_in):
                    m.d.sync += [stage.w[j - d - 1].eq(lanes_w[j][-1]) for j in range(d + 1, C)]
                    m.d.sync += [stage.nz[j - d - 1].eq(lanes_nz[j][-1]) for j in range(d + 1, C)]
                for j in range(d + 1, C):
                    lanes_w[j].append(stage.w[j - d - 1])
                    lanes_nz[j].append(stage.nz[j - d - 1])
            for j in range(C):
                pe = pes[i][j]
                if j == 0:
                    m.d.comb += [pe.x_in.eq(x), pe.valid_in.eq(v), pe.load_in.eq(ld)]
                else:
                    left = pes[i][j - 1]
                    m.d.comb += [pe.x_in.eq(left.x_out), pe.valid_in.eq(left.valid_out), pe.load_in.eq(left.load_out)]
                m.d.comb += [pe.w_in.eq(lanes_w[j][j]), pe.w_nz_in.eq(lanes_nz[j][j])]
                m.d.comb += pe.psum_in.eq(0 if i == 0 else pes[i - 1][j].psum_out)
        # deskew: column j leaves the bottom at R-1+j+PSUM_DELAY+1; delay by C-1-j to align all columns
        for j in range(C):
            y = pes[R - 1][j].psum_out
            for d in range(C - 1 - j):
                y2 = Signal(signed(self.acc_width), name=f"deskew_{j}_{d}")
                m.d.sync += y2.eq(y)
                y = y2
            m.d.comb += self.y[j].eq(y)
        vout = pes[R - 1][C - 1].valid_out
        for d in range(PSUM_DELAY):
            v2 = Signal(name=f"out_valid_d{d}")
            m.d.sync += v2.eq(vout)
            vout = v2
        m.d.comb += self.out_valid.eq(vout)

        # -- activity: sums of the PEs' flags and of the weight register enables, registered twice
        for i in range(R):
            for d in range(C - 1):   # delay stage d of row i: lanes d+1 .. C-1
                writes.append((pes[i][d].valid_in & pes[i][d].load_in, C - 1 - d))
            for j in range(C):
                writes.append((pes[i][j].valid_in & pes[i][j].load_in, 1))

        def registered_sums(name, groups, widths):
            """One register per group, holding the group's sum."""
            sums = []
            for i, (group, width) in enumerate(zip(groups, widths)):
                r = Signal(width, name=f"{name}{i}")
                m.d.sync += r.eq(sum(group, Const(0, 1)))
                sums.append(r)
            return sums

        def tree(name, terms, width):
            total = Signal(width, name=f"{name}_total")
            m.d.sync += total.eq(sum(registered_sums(f"{name}_row", terms, [width] * len(terms)), Const(0, 1)))
            return total

        cw = ceil_log2(R * C + 1)
        m.d.comb += [
            self.mults.eq(tree("mults", [[pes[i][j].mult for j in range(C)] for i in range(R)], cw)),
            self.gated.eq(tree("gated", [[pes[i][j].gated for j in range(C)] for i in range(R)], cw)),
        ]
        # a row's weight register enables, each times its register's bytes, are summed in parts of at most
        # WREG_PART terms first: one sum of about 2C multi-bit terms was the placed design's critical path
        per_row = [[] for _ in range(R)]
        for k, write in enumerate(writes):
            per_row[k % R].append(write)

        def part_sums(i, row):
            parts = [row[p:p + WREG_PART] for p in range(0, len(row), WREG_PART)]
            return registered_sums(
                f"wreg_part{i}_", [[en.as_unsigned() * nbytes if nbytes > 1 else en.as_unsigned()
                                    for en, nbytes in part] for part in parts],
                [ceil_log2(sum(nbytes for _, nbytes in part) + 1) for part in parts])

        rows = [part_sums(i, row) for i, row in enumerate(per_row)]
        m.d.comb += self.wreg_writes.eq(tree("wreg", rows, ceil_log2(self.wreg_per_fold() + 1)))
        return m
