"""An R x C weight-stationary systolic array with input skew and output deskew."""

from amaranth import Module, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from prunehw.hw.pe import PSUM_DELAY, ProcessingElement

__all__ = ["SystolicArray"]


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
    out_valid : Out(1)
    y : Out(ArrayLayout(signed(acc_width), cols))
        Latency: ``rows + cols - 1 + PSUM_DELAY`` cycles from ``valid`` to ``out_valid``.
    """

    def __init__(self, *, rows: int, cols: int, x_width: int = 9, w_width: int = 8, acc_width: int = 32,
                 fault: str | None = None):
        for name, v in (("rows", rows), ("cols", cols)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")
        self.rows, self.cols = rows, cols
        self.fault = fault  # mutation campaign only (hw/faults.py)
        self.x_width, self.w_width, self.acc_width = x_width, w_width, acc_width
        super().__init__({
            "valid": In(1), "load": In(1),
            "x": In(data.ArrayLayout(signed(x_width), rows)),
            "w": In(data.ArrayLayout(data.ArrayLayout(signed(w_width), cols), rows)),
            "out_valid": Out(1),
            "y": Out(data.ArrayLayout(signed(acc_width), cols)),
        })

    @property
    def latency(self) -> int:
        return self.rows + self.cols - 1 + PSUM_DELAY

    def elaborate(self, platform):
        m = Module()
        R, C = self.rows, self.cols
        def pe_fault(i, j):
            where = {"pe_psum_stuck0_bit3": (0, 0), "pe_psum_stuck1_bit0": (R - 1, C - 1),
                     "pe_weight_stuck0_bit7": (min(1, R - 1), min(1, C - 1))}.get(self.fault)
            return self.fault if where == (i, j) else None

        pes = [[ProcessingElement(x_width=self.x_width, w_width=self.w_width, acc_width=self.acc_width, fault=pe_fault(i, j))
                for j in range(C)] for i in range(R)]
        for i in range(R):
            for j in range(C):
                m.submodules[f"pe_{i}_{j}"] = pes[i][j]
        for i in range(R):
            # input skew: row i sees its beat i cycles late; weights W[i][j] are delayed j more
            # (one per PE passed), riding with the load beat.
            x, v, ld = self.x[i], self.valid, self.load
            wrow = [self.w[i][j] for j in range(C)]
            for d in range(i - 1 if self.fault == "skew_row1_short" and i == 1 else i):
                x2, v2, ld2 = Signal.like(pes[i][0].x_in, name=f"skew_x_{i}_{d}"), Signal(name=f"skew_v_{i}_{d}"), Signal(name=f"skew_l_{i}_{d}")
                w2 = [Signal(signed(self.w_width), name=f"skew_w_{i}_{d}_{j}") for j in range(C)]
                m.d.sync += [x2.eq(x), v2.eq(v), ld2.eq(ld)] + [a.eq(b) for a, b in zip(w2, wrow)]
                x, v, ld, wrow = x2, v2, ld2, w2
            for j in range(C):
                pe = pes[i][j]
                if j == 0:
                    m.d.comb += [pe.x_in.eq(x), pe.valid_in.eq(v), pe.load_in.eq(ld)]
                else:
                    left = pes[i][j - 1]
                    m.d.comb += [pe.x_in.eq(left.x_out), pe.valid_in.eq(left.valid_out), pe.load_in.eq(left.load_out)]
                # weight for column j arrives j cycles after column 0's: delay the row's lane j by j
                wj = wrow[j]
                for d in range(j):
                    w3 = Signal(signed(self.w_width), name=f"wdel_{i}_{j}_{d}")
                    m.d.sync += w3.eq(wj)
                    wj = w3
                m.d.comb += pe.w_in.eq(wj)
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
        return m
