"""The int8 multiply-accumulate processing element of the weight-stationary systolic array."""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ProcessingElement"]


class ProcessingElement(wiring.Component):
    """One PE: holds a weight, multiplies the activation passing through it, adds the partial sum from above.

    Weights ride with the first activation beat of each fold (``load``) along
    the row, so a PE switches to the next fold's weight exactly when that fold's
    first beat reaches it, without stalling the stream (the effect of double
    buffering, with one register).

    Parameters
    ----------
    x_width : int
        Activation width (signed).
    w_width : int
        Weight width (signed).
    acc_width : int
        Partial-sum width (signed).

    Members
    -------
    x_in, valid_in, load_in, w_in : In
        Activation, beat valid, load flag, and this PE's new weight (used when ``load_in``).
    psum_in : In(signed(acc_width))
        Partial sum from the PE above (0 for the top row).
    x_out, valid_out, load_out : Out
        The same activation/valid/load, one cycle later, for the PE to the right.
    psum_out : Out(signed(acc_width))
        ``psum_in + x_in * weight``, registered: latency 1 cycle.
    """

    def __init__(self, *, x_width: int = 9, w_width: int = 8, acc_width: int = 32, fault: str | None = None):
        for name, v in (("x_width", x_width), ("w_width", w_width), ("acc_width", acc_width)):
            if not isinstance(v, int) or v < 2:
                raise ValueError(f"{name} must be an integer >= 2, not {v!r}")
        self.x_width, self.w_width, self.acc_width = x_width, w_width, acc_width
        self.fault = fault  # mutation campaign only (hw/faults.py)
        super().__init__({
            "x_in": In(signed(x_width)), "valid_in": In(1), "load_in": In(1), "w_in": In(signed(w_width)),
            "psum_in": In(signed(acc_width)),
            "x_out": Out(signed(x_width)), "valid_out": Out(1), "load_out": Out(1),
            "psum_out": Out(signed(acc_width)),
        })

    def elaborate(self, platform):
        m = Module()
        weight = Signal(signed(self.w_width))
        w_use = Mux(self.load_in, self.w_in, weight)
        if self.fault == "pe_weight_stuck0_bit7":
            w_use = (w_use & 0x7F).as_signed()
        with m.If(self.valid_in & self.load_in):
            m.d.sync += weight.eq(self.w_in)
        psum = self.psum_in + self.x_in * w_use
        if self.fault == "pe_psum_stuck0_bit3":
            psum = psum & ~(1 << 3)
        elif self.fault == "pe_psum_stuck1_bit0":
            psum = psum | 1
        m.d.sync += [
            self.x_out.eq(self.x_in), self.valid_out.eq(self.valid_in), self.load_out.eq(self.load_in),
            self.psum_out.eq(psum),
        ]
        return m
