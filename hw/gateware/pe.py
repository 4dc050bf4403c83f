"""The int8 multiply-accumulate processing element of the weight-stationary systolic array."""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from prunehw.hw.gateware.taps import PASS

__all__ = ["ProcessingElement", "PSUM_DELAY"]

#: Cycles from a beat's ``x_in`` to the cycle its product meets ``psum_in`` (operand and product registers).
PSUM_DELAY = 2


class ProcessingElement(wiring.Component):
    """One PE: holds a weight, multiplies the activation passing through it, adds the partial sum from above.

    Weights ride with the first activation beat of each fold (``load``) along
    the row, so a PE switches to the next fold's weight exactly when that fold's
    first beat reaches it, without stalling the stream (the effect of double
    buffering, with one register).

    Pipelined for the clock: the activation and the weight it meets are
    registered, the product is registered, then added to the partial sum, so
    the multiplier has a register on each side and the adder its own cycle.
    Where the ``platform`` has a multiplier primitive (``take_multiplier`` and ``registered_multiply``; for the ECP5,
    :class:`~prunehw.hw.target.ecp5.ECP5`) the product register is the primitive's own output register (the operand
    registers, which have clock enables, stay in the fabric); the
    behaviour, cycle for cycle, is the same.
    A beat entering at cycle t (``x_in``) meets ``psum_in`` at cycle t + 2
    (:data:`PSUM_DELAY`); ``psum_out`` is valid at t + 3. The PE below gets the
    activation at t + 1 and so needs this PE's sum at t + 3: the chain lines up.

    Zero-weight gating: while the PE holds a zero weight, its activation
    register keeps its old value (no operand changes, so the multiplier does
    not switch; the product stays 0) and the beat is reported on
    ``gated`` instead of ``mult``.

    Parameters
    ----------
    x_width : int
        Activation width (signed).
    x_port_width : int
        The width ``x_in`` and ``x_out`` carry the activation at, sign-extended (default ``x_width``): a target
        whose multiplier reads wider operands has the array carry them at its width (see
        :attr:`~prunehw.hw.target.ecp5.ECP5Primitives.multiplier_operand_bits`).
    w_width : int
        Weight width (signed).
    acc_width : int
        Partial-sum width (signed).

    Members
    -------
    x_in, valid_in, load_in, w_in : In
        Activation, beat valid, load flag, and this PE's new weight (used when ``load_in``).
    w_nz_in : In(1)
        ``w_in != 0``, computed upstream (the gate decision is then one LUT from registers).
    psum_in : In(signed(acc_width))
        Partial sum from the PE above (0 for the top row), sampled :data:`PSUM_DELAY` cycles after the beat's ``x_in``.
    x_out, valid_out, load_out : Out
        The same activation/valid/load, one cycle later, for the PE to the right.
    psum_out : Out(signed(acc_width))
        ``psum_in + x * weight``, registered: valid ``PSUM_DELAY + 1`` cycles after the beat's ``x_in``.
    mult, gated : Out(1)
        Registered: the beat that entered the previous cycle was multiplied (non-zero weight), or
        gated (zero weight). Invalid cycles are neither.
    """

    def __init__(self, *, x_width: int = 9, w_width: int = 8, acc_width: int = 32, x_port_width: int | None = None,
                 taps=PASS, where: dict | None = None):
        x_port_width = x_width if x_port_width is None else x_port_width
        for name, v in (("x_width", x_width), ("w_width", w_width), ("acc_width", acc_width),
                        ("x_port_width", x_port_width)):
            if not isinstance(v, int) or v < 2:
                raise ValueError(f"{name} must be an integer >= 2, not {v!r}")
        if x_port_width < x_width:
            raise ValueError(f"x_port_width ({x_port_width}) must be at least x_width ({x_width})")
        self.x_width, self.w_width, self.acc_width = x_width, w_width, acc_width
        self.taps, self.where = taps, where or {}   # the mutation campaign's hook (hw/gateware/taps.py) and this PE's place
        super().__init__({
            "x_in": In(signed(x_port_width)), "valid_in": In(1), "load_in": In(1), "w_in": In(signed(w_width)),
            "w_nz_in": In(1),
            "psum_in": In(signed(acc_width)),
            "x_out": Out(signed(x_port_width)), "valid_out": Out(1), "load_out": Out(1),
            "psum_out": Out(signed(acc_width)), "mult": Out(1), "gated": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        taps, where = self.taps, self.where
        load = self.valid_in & self.load_in
        w_new = taps("pe.weight_in", self.w_in, **where)
        # the weight register takes the new weight on a load beat; ``x`` the activation of every
        # valid beat whose weight is not zero; ``product`` = x * weight one cycle later
        w_nz = Signal()                       # the held weight is not zero
        with m.If(load):
            m.d.sync += w_nz.eq(self.w_nz_in)
        nz_now = taps("pe.gate", Mux(load, self.w_nz_in, w_nz), held=w_nz, **where)
        take = self.valid_in & nz_now
        m.d.sync += [self.mult.eq(taps("pe.mult", take, **where)),
                     self.gated.eq(self.valid_in & ~nz_now)]
        # a target with a multiplier primitive builds it (its own output register holding the product), the
        # operand registers as wide as its ports; otherwise, or once the part's primitives are all taken, plain
        # arithmetic in the fabric, the same cycle for cycle
        take_multiplier = getattr(platform, "take_multiplier", None)
        primitive = take_multiplier is not None and take_multiplier()
        wide = platform.multiplier_operand_bits if primitive else None
        product = Signal(signed(self.x_width + self.w_width))
        weight = Signal(signed(wide or self.w_width))
        x = Signal(signed(wide or self.x_width))
        with m.If(load):
            m.d.sync += weight.eq(w_new)
        with m.If(take):
            m.d.sync += x.eq(self.x_in)
        if primitive:
            platform.registered_multiply(m, weight, x, product)
        else:
            m.d.sync += product.eq(x * weight)
        psum = taps("pe.psum", self.psum_in + product, **where)
        m.d.sync += [
            self.x_out.eq(self.x_in), self.valid_out.eq(self.valid_in), self.load_out.eq(self.load_in),
            self.psum_out.eq(psum),
        ]
        return m
