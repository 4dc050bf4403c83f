"""The array's bottom: accumulation over row tiles, requantization, fused max pooling, the output write."""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from prunehw.hw.gateware.block_ram import READ_LATENCY, BlockRAM
from prunehw.hw.gateware.plan import PSUM_FORWARD, Plan
from prunehw.export.contract import output_range
from prunehw.hw.compile.program import MatmulOp
from prunehw.hw.gateware.taps import PASS

__all__ = ["ADD_STAGES", "BOTTOM_STAGES", "DIVIDE_STAGES", "WriteBack", "bigger", "requantize"]

#: Cycles from the array's output to the output word's write: sum, rounding, saturation, and the fused
#: pooling's running maximum (each registered).
BOTTOM_STAGES = 4
#: More in a design with a residual add: the sum with the add's other input and its rounding, then its shift and
#: saturation (each registered).
ADD_STAGES = 2
#: More in a design whose pooling divides by a window size that is not a power of two (``Plan.divides``): the
#: window's sum is registered, then divided in three more stages: its sign and magnitude; the magnitude's products
#: with the reciprocal's pieces of :data:`PRODUCT_BITS` (one DSP each); their sum; each registered, then the shift,
#: the sign and the rounding into the word. The window's maximum is delayed alongside. In a design with a residual
#: add the add stages are delayed to match (``DIVIDE_STAGES`` - 1 more registers), since an op's word may take either
#: path; a pooling pass is ``DIVIDE_STAGES`` cycles longer.
DIVIDE_STAGES = 4
#: Bits of the reciprocal in one registered product: an 18x18 signed multiplier (ECP5's MULT18X18D) takes 17
#: unsigned bits. A wider reciprocal (window sizes such as 25 or 125 need 19 or 20 bits)
#: is multiplied in pieces and summed in the next stage: the whole product in one stage was DS-CNN's critical path
#: at 95.7 MHz (two DSPs and their adder).
PRODUCT_BITS = 17


class WriteBack(wiring.Component):
    """Adds each beat's column sums to the bias (first row tile) or the stored partial sum, stores the new
    sum, or on the last row tile requantizes it, keeps a fused pooling window's running maximum and
    asks for the window's word to be written; the last layer keeps its logits instead.

    The beat's metadata follows it through the array in a delay line of ``latency`` registers. The
    partial sum is read :data:`~prunehw.hw.gateware.block_ram.READ_LATENCY` cycles ahead, the bias 2 (a ROM
    small enough for logic, then a register). A later row tile of the same position that comes back
    within :data:`~prunehw.hw.gateware.plan.PSUM_FORWARD` beats takes the running sum from the forwarding
    registers instead (its memory write has not landed yet). After the array: the sum is registered;
    the next cycle stores it as the partial sum, or requantizes it in two registered steps (ReLU and
    rounding half up; shift and saturation); the word is registered, and the running maximum of the
    pooling window (a plain convolution's window is one position) is kept, the window's word written
    with its last position (:data:`BOTTOM_STAGES`).

    Parameters
    ----------
    plan : Plan
        The program's sizes, biases and requantization constants.
    latency : int
        Cycles from a beat's entry into the array to its column sums at ``y`` (the array's latency).
    taps : Taps
        The mutation campaign's hook (:mod:`~prunehw.hw.gateware.taps`); ``PASS`` (no fault) in real designs.

    Members
    -------
    k : In(plan.op_layout), op : In(range(n_ops))
        The running op's constants and index (each op has its own requantization).
    entry : In(plan.beat)
        The beat entering the array.
    y : In(plan.sums)
        The array's column sums, ``latency`` cycles after their beat's entry.
    fire : Out(1), addr : Out(aw), word : Out(plan.word)
        A finished output word, to be written to the output buffer at ``addr``.
    logits : Out(ArrayLayout(signed(ACC), n_logits))
        The last layer's sums, kept in registers.
    psum_read, psum_write, bias_read : Out(1)
        Memory port enables (activity).
    """

    def __init__(self, *, plan: Plan, latency: int, taps=PASS):
        self.plan, self.latency, self.taps = plan, latency, taps
        super().__init__({
            "k": In(plan.op_layout), "op": In(range(max(2, plan.n_ops))), "entry": In(plan.beat), "y": In(plan.sums),
            "fire": Out(1), "addr": Out(plan.aw), "word": Out(plan.word),
            "logits": Out(data.ArrayLayout(signed(plan.ACC), plan.program.n_logits)),
            "psum_read": Out(1), "psum_write": Out(1), "bias_read": Out(1),
            # a design with a residual add: the add's other input, read at the output word's address
            **({"short_addr": Out(plan.aw), "short_en": Out(1), "short_word": In(plan.word)} if plan.residual else {}),
        })

    def elaborate(self, platform):
        m = Module()
        plan, taps, k = self.plan, self.taps, self.k
        C, p = plan.C, plan.program
        where = {"rows": plan.R, "cols": C}
        m.submodules.psum = psum = BlockRAM(width=plan.C * plan.ACC, depth=plan.psum_words)
        m.submodules.brom = brom = Memory(shape=C * plan.ACC, depth=len(plan.bimg), init=plan.bimg)
        b_rd = brom.read_port()

        line = [self.entry]
        for d in range(self.latency):
            nxt = Signal(plan.beat, name=f"meta_d{d + 1}")
            m.d.sync += nxt.eq(line[-1])
            line.append(nxt)
        # aligned with the array output; the partial-sum read (READ_LATENCY ahead); the bias read (2 ahead)
        mA, mRd, mBias = line[-1], line[-1 - READ_LATENCY], line[-3]
        m.d.comb += [psum.r_addr.eq(mRd.pos), psum.r_en.eq(mRd.v & ~mRd.first_rt),
                     b_rd.addr.eq(k.bbase + mBias.ct), b_rd.en.eq(mBias.v & mBias.first_rt),
                     self.psum_read.eq(psum.r_en), self.bias_read.eq(b_rd.en)]
        psum_q, bias_q = plan.sums(psum.r_data), Signal(plan.sums, reset_less=True)
        m.d.sync += bias_q.eq(b_rd.data)
        total = Signal(plan.sums)
        recent = [Signal(plan.sums, name=f"total_q{d + 1}") for d in range(PSUM_FORWARD)]   # totals of the last beats
        m.d.sync += recent[0].eq(total)
        for d in range(1, PSUM_FORWARD):
            m.d.sync += recent[d].eq(recent[d - 1])
        forwarded = psum_q
        for d in reversed(range(PSUM_FORWARD)):
            forwarded = Mux(mA.fwd == d + 1, recent[d], forwarded)
        stored = taps("bottom.forwarded_sum", forwarded, memory=psum_q, **where)
        prev = Signal(plan.sums)
        m.d.comb += prev.eq(Mux(mA.first_rt, taps("bottom.bias", bias_q, **where), taps("bottom.partial_sum", stored, **where)))
        for j in range(C):
            m.d.comb += total[j].eq(taps("bottom.sum", prev[j] + self.y[j], lane=j, **where))
        mB = Signal(plan.beat)
        m.d.sync += mB.eq(mA)
        m.d.comb += [psum.w_addr.eq(mB.pos), psum.w_data.eq(recent[0]), psum.w_en.eq(mB.v & ~mB.last_rt),
                     self.psum_write.eq(psum.w_en)]

        # requantization in two stages (ReLU and rounding, then shift and saturation), each op its own;
        # the last layer keeps its logits
        rounded = Signal(data.ArrayLayout(signed(plan.ACC + 1), C))
        rnd_q = Signal.like(rounded)
        out_word = Signal(plan.word)
        logits = Array(self.logits[i] for i in range(p.n_logits))
        with m.Switch(self.op):
            for i, o in enumerate(p.ops):
                if not isinstance(o, MatmulOp):
                    continue
                with m.Case(i):
                    if o.last:
                        with m.If(mA.v & mA.last_rt):
                            for j in range(C):
                                for ctv in range(o.n_ct):
                                    if ctv * C + j < p.n_logits:
                                        with m.If(mA.ct == ctv):
                                            dst = taps("bottom.logit_index", ctv * C + j, **where)
                                            m.d.sync += logits[dst].eq(total[j])
                    else:
                        rnd, sat = requantize(o.acc_frac, o.out, taps, where)
                        for j in range(C):
                            m.d.comb += [rounded[j].eq(rnd(recent[0][j])), out_word[j].eq(sat(rnd_q[j]))]
        mC = Signal(plan.beat)
        m.d.sync += [rnd_q.eq(rounded), mC.eq(mB)]
        # the word is registered with its metadata: the write lands in the cycle the next op may issue
        mD, word_q = Signal(plan.beat), Signal(plan.word)
        m.d.sync += [word_q.eq(out_word), mD.eq(mC)]
        # fused pooling: the window's positions are consecutive beats of the last row tile; keep their
        # running maximum (or sum) and write the window's word with its last one
        fire = mD.v & mD.last_rt & mD.win_last & ~k.is_last & ~k.is_pool
        if not plan.residual:
            pooled(m, plan, k, mD.win_first, mD.v & mD.last_rt, word_q, k.out_signed, self.word, taps, where)
            fire, addr = with_pooled_word(m, plan, fire, mD.oaddr)
            m.d.comb += [self.fire.eq(fire), self.addr.eq(taps("bottom.write_address", addr, **where))]
            return m
        pooled_word = Signal(plan.word)
        pooled(m, plan, k, mD.win_first, mD.v & mD.last_rt, word_q, k.out_signed, pooled_word, taps, where)
        self._add(m, mA, mD, word_q, pooled_word, fire)
        return m

    def _add(self, m: Module, mA, mD, word_q, pooled_word, fire) -> None:
        """A design with a residual add: two more stages after the word (:data:`ADD_STAGES`; ``DIVIDE_STAGES`` - 1
        more in a design that divides), in every op. The add's other input is read at the output word's address
        when the beat leaves the array, so it arrives with the word; the two are aligned to the finer fraction,
        summed, ReLU'd and rounded (registered), then shifted and saturated to the add's output (registered) and
        written. An op without an add passes its word on."""
        plan, taps, k, C, p = self.plan, self.taps, self.k, self.plan.C, self.plan.program
        where = {"rows": plan.R, "cols": C}
        m.d.comb += [self.short_addr.eq(mA.oaddr), self.short_en.eq(mA.v & mA.last_rt & k.add_en)]
        width = 8 + max(plan.add_shifts) + 2
        rounded = Signal(data.ArrayLayout(signed(width + 1), C))
        sums_q, added = Signal.like(rounded), Signal(plan.word)
        with m.Switch(self.op):
            for i, o in enumerate(p.ops):
                if not (isinstance(o, MatmulOp) and o.add):
                    continue
                with m.Case(i):
                    formats = o.add["input"]
                    mine, other = formats[o.add["mine"]], formats[1 - o.add["mine"]]
                    frac = max(f["frac"] for f in formats)
                    rnd, sat = requantize(frac, o.add["output"], taps, where)
                    for j in range(C):
                        a, b = word_q[j][:mine["bits"]], self.short_word[j][:other["bits"]]
                        a = a.as_signed() if mine["signed"] else a
                        b = b.as_signed() if other["signed"] else b
                        total = (a << (frac - mine["frac"])) + (b << (frac - other["frac"]))
                        m.d.comb += [rounded[j].eq(rnd(total)), added[j].eq(sat(sums_q[j]))]
        pass_q, word_f = Signal(plan.word), Signal(plan.word)
        add_e, fire_e, fire_f = Signal(), Signal(), Signal()
        addr_e, addr_f = Signal(plan.aw), Signal(plan.aw)
        m.d.sync += [sums_q.eq(rounded), add_e.eq(k.add_en), fire_e.eq(fire), addr_e.eq(mD.oaddr)]
        if plan.divides:
            # the pooled word comes out of ``pooled``'s own registers, DIVIDE_STAGES after the word: the add's
            # stages wait for it
            late = DIVIDE_STAGES - 1
            added = delayed(m, added, late, "added_late")
            add_e, fire_e = delayed(m, add_e, late, "add_late"), delayed(m, fire_e, late, "fire_late")
            addr_e = delayed(m, addr_e, late, "addr_late")
            m.d.comb += pass_q.eq(pooled_word)
        else:
            m.d.sync += pass_q.eq(pooled_word)
        m.d.sync += [word_f.eq(Mux(add_e, added, pass_q)), fire_f.eq(fire_e), addr_f.eq(addr_e)]
        m.d.comb += [self.word.eq(word_f), self.fire.eq(fire_f),
                     self.addr.eq(taps("bottom.write_address", addr_f, **where))]


def with_pooled_word(m: Module, plan: Plan, fire, addr):
    """The write request (``fire``, ``addr``) of the word :func:`pooled` makes from this cycle's element: as is, or
    registered :data:`DIVIDE_STAGES` times where ``pooled`` gives its word that much later (``plan.divides``)."""
    if not plan.divides:
        return fire, addr
    return delayed(m, fire, DIVIDE_STAGES, "fire_div"), delayed(m, addr, DIVIDE_STAGES, "addr_div")


def delayed(m: Module, value, stages: int, name: str):
    """``value`` ``stages`` cycles later, through a register per cycle (``<name>``, ``<name>_2``, ...)."""
    for d in range(stages):
        reg = Signal.like(value, name=name if d == 0 else f"{name}_{d + 1}")
        m.d.sync += reg.eq(value)
        value = reg
    return value


def pooled(m: Module, plan: Plan, k, first, enable, new, signed_, out, taps=PASS, where=None) -> None:
    """Drive ``out`` with the pooled word of a window after its element ``new`` (C bytes, ``signed_`` or not): the
    running maximum (restarted where ``first``), or where the op averages (``k.avg``) over ``k.avg_n`` values the
    running sum plus ``new``, averaged as the contract says (:func:`average`); the running value is kept while
    ``enable``. In a design that divides by a window size that is not a power of two (``plan.divides``), the sum
    and the maximum are registered first and ``out`` follows :data:`DIVIDE_STAGES` cycles later."""
    C = plan.C
    run_max = Signal(plan.word)
    words = [Mux(first | bigger(new[j], run_max[j], signed_, taps, where), new[j], run_max[j]) for j in range(C)]
    if plan.divides:
        # the running maximum goes on at once; the window's maximum and sum are registered, and the word is
        # chosen (and divided) from those, the maximum delayed as long as the division
        max_now, max_q = Signal(plan.word, name="window_max_now"), Signal(plan.word, name="window_max")
        m.d.comb += [max_now[j].eq(words[j]) for j in range(C)]
        m.d.sync += max_q.eq(max_now)
        with m.If(enable):
            m.d.sync += run_max.eq(max_now)
        max_late = delayed(m, max_q, DIVIDE_STAGES - 1, "window_max_late")
        words = [max_late[j] for j in range(C)]
    if plan.averaged:
        run_sum = Signal(data.ArrayLayout(signed(9 + max((n - 1).bit_length() for n in plan.avg_sizes)), C))
        sum_q = Signal.like(run_sum, name="window_sum") if plan.divides else None
        for j in range(C):
            total = Mux(first, 0, run_sum[j]) + Mux(signed_, new[j].as_signed(), Cat(new[j], Const(0, 1)).as_signed())
            with m.If(enable):
                m.d.sync += run_sum[j].eq(total)
            if plan.divides:
                m.d.sync += sum_q[j].eq(total)
                total = sum_q[j]
            avg = total
            for n in plan.avg_sizes:        # (only the window sizes some op averages over: one divider each)
                value = staged_average(m, total, n, f"avg{n}_{j}") if plan.divides else average(total, n)
                avg = Mux(k.avg_n == n, value, avg)
            words[j] = Mux(k.avg, avg[:8], words[j])
    m.d.comb += [out[j].eq(words[j]) for j in range(C)]
    if not plan.divides:
        with m.If(enable):
            m.d.sync += run_max.eq(out)


def average(total, n: int):
    """The contract's average of ``n`` byte values whose sum is ``total`` (signed): the quotient truncated toward
    zero at E = ceil(log2 n) more fractional bits, then rounded half up to the bytes' LSB. A power-of-two ``n`` is
    a shift (its quotient is exact); otherwise the quotient's magnitude is a constant multiplication and a shift
    (:func:`reciprocal`)."""
    e = (n - 1).bit_length()
    if n == 1 << e:
        return (total + ((1 << e) >> 1)) >> e
    mult, shift = reciprocal(n, e, 256 * n)
    magnitude = Mux(total < 0, -total, total)
    q = (magnitude * mult) >> shift                      # floor(|total| * 2**e / n)
    return (Mux(total < 0, -q, q) + (1 << (e - 1))) >> e


def staged_average(m: Module, total, n: int, name: str):
    """:func:`average` of ``total`` :data:`DIVIDE_STAGES` - 1 cycles later, in registered stages: the sign and the
    magnitude; the magnitude times each :data:`PRODUCT_BITS`-bit piece of the reciprocal; those products summed. The
    shift, the sign and the rounding follow unregistered. (A power-of-two ``n`` is a shift of the delayed sum.)"""
    e = (n - 1).bit_length()
    if n == 1 << e:
        return average(delayed(m, total, DIVIDE_STAGES - 1, f"{name}_sum"), n)
    mult, shift = reciprocal(n, e, 256 * n)
    negative, magnitude = Signal(name=f"{name}_neg"), Signal(len(total), name=f"{name}_mag")
    m.d.sync += [negative.eq(total < 0), magnitude.eq(Mux(total < 0, -total, total))]
    pieces = []
    for i in range(-(-mult.bit_length() // PRODUCT_BITS)):
        piece = (mult >> (i * PRODUCT_BITS)) & ((1 << PRODUCT_BITS) - 1)
        pieces.append(Signal(len(total) + PRODUCT_BITS, name=f"{name}_product{i}"))
        m.d.sync += pieces[-1].eq(magnitude * piece)
    product = Signal(len(total) + mult.bit_length(), name=f"{name}_product")
    m.d.sync += product.eq(sum(p << (i * PRODUCT_BITS) for i, p in enumerate(pieces)))
    negative = delayed(m, negative, DIVIDE_STAGES - 2, f"{name}_neg_late")
    q = (product >> shift).as_signed()                   # floor(|total| * 2**e / n), nonnegative
    return (Mux(negative, -q, q) + (1 << (e - 1))) >> e


def reciprocal(n: int, e: int, largest: int) -> tuple[int, int]:
    """(M, K), the smallest K with ``(x * M) >> K == (x << e) // n`` for every x in 0..``largest``, M = ceil(2**(K + e)
    / n): division by a constant as a multiplication, checked on every value it will see."""
    for k in range(64):
        mult = -(-(1 << (k + e)) // n)
        if all((x * mult) >> k == (x << e) // n for x in range(largest + 1)):
            return mult, k
    raise ValueError(f"no reciprocal of {n} within 64 bits")


def bigger(a, b, signed_, taps=PASS, where=None):
    """``a > b`` for two bytes, compared as signed or unsigned by ``signed_`` (max pooling's comparison)."""
    return taps("pool.bigger", Mux(signed_, a.as_signed() > b.as_signed(), a > b), **(where or {}))


def requantize(acc_frac: int, out: dict, taps=PASS, where=None):
    """The contract's requantization as two pipeline stages, ``(round, saturate)``: ReLU and half an output
    LSB added; then the shift to ``out['frac']`` and saturation to ``out['bits']`` (and to a relu6's cap)."""
    where = where or {}
    shift = taps("requant.shift", acc_frac - out["frac"], **where)
    signed_range = taps("requant.signed_range", bool(out["signed"]), **where)

    def round_(acc):
        v = Mux(acc[-1], 0, acc) if out["relu"] else acc   # the sign bit: no comparator on the path
        return v + taps("requant.half", Const(1 << (shift - 1)), **where) if shift > 0 else v

    def saturate(rounded):
        q = rounded >> shift if shift > 0 else rounded << (-shift)
        if signed_range:
            lo, hi = -(1 << (out["bits"] - 1)), (1 << (out["bits"] - 1)) - 1
        else:
            lo, hi = 0, (1 << out["bits"]) - 1
        # range checks on the bits above the output width (no comparators): q fits when those bits
        # are all zero (unsigned) or all equal to the sign (signed)
        sign = q[-1]
        top = q[out["bits"] - (1 if lo < 0 else 0):]
        over = ~sign & top.any()
        under = sign & ~top.all() if lo < 0 else sign
        cap = output_range(out)[1]
        if cap < hi:      # a relu6's cap below the width's largest code: one comparator on the in-range bits
            over = over | (~sign & (q[:out["bits"]] > cap))
            hi = cap
        return taps("requant.saturated", Mux(over, hi, Mux(under, lo, q))[:8], unsaturated=q, **where)

    return round_, saturate
