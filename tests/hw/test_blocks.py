"""Block-level tests in Amaranth's simulator, each against a plain reference model."""

import numpy as np
import pytest
from amaranth import Module, Signal, signed
from amaranth.sim import Simulator

from prunehw.hw.gateware.pe import ProcessingElement
from prunehw.hw.gateware.systolic_array import SystolicArray
from prunehw.hw.gateware.writeback import requantize as requant_logic
from prunehw.export.golden import requantize
from stimulus import folds, int8_matrix


def run(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_pe_multiply_accumulate_and_weight_load(rng):
    """A beat's x meets the partial sum 2 cycles later (operand and product registers) and leaves 1 cycle after."""
    dut = ProcessingElement(x_width=9, w_width=8, acc_width=24)
    n = 40
    w_seq = int8_matrix(rng, (n,))
    x_seq = rng.integers(-256, 256, n)
    p_seq = rng.integers(-2**20, 2**20, n + 2)
    load = rng.random(n) < 0.3
    load[0] = True
    want, weight = [], 0
    for t in range(n):
        weight = int(w_seq[t]) if load[t] else weight
        want.append(int(p_seq[t + 2]) + int(x_seq[t]) * weight)
    got, x_out = [], []

    async def bench(ctx):
        for t in range(n + 3):
            beat = t < n
            ctx.set(dut.valid_in, int(beat))
            ctx.set(dut.load_in, int(beat and load[t]))
            ctx.set(dut.w_in, int(w_seq[t]) if beat else 0)
            ctx.set(dut.w_nz_in, int(beat and w_seq[t] != 0))
            ctx.set(dut.x_in, int(x_seq[t]) if beat else 0)
            ctx.set(dut.psum_in, int(p_seq[t]) if t < n + 2 else 0)
            await ctx.tick()
            if beat:
                x_out.append(ctx.get(dut.x_out))
            if t >= 2 and t - 2 < n:
                got.append(ctx.get(dut.psum_out))

    run(dut, bench)
    assert got == want
    assert x_out == [int(x) for x in x_seq]


def test_pe_gates_zero_weights():
    """With a zero weight the activation register holds (the multiplier sees no new operand); flags count both."""
    dut = ProcessingElement(x_width=9, w_width=8, acc_width=24)
    # (valid, load, weight, x): a zero-weight fold, a non-zero one loaded on its first beat, an idle cycle
    beats = [(1, 1, 0, 5), (1, 0, 0, 7), (1, 1, 3, 11), (1, 0, 0, 13), (0, 0, 0, 17), (1, 1, 0, 19)]
    seen = []

    async def bench(ctx):
        for t in range(len(beats) + 2):
            v, ld, w, x = beats[t] if t < len(beats) else (0, 0, 0, 0)
            ctx.set(dut.valid_in, v)
            ctx.set(dut.load_in, ld)
            ctx.set(dut.w_in, w)
            ctx.set(dut.w_nz_in, int(w != 0))
            ctx.set(dut.x_in, x)
            ctx.set(dut.psum_in, 0)
            await ctx.tick()
            seen.append((ctx.get(dut.mult), ctx.get(dut.gated), ctx.get(dut.psum_out)))

    run(dut, bench)
    flags = [(a, b) for a, b, _ in seen[:len(beats)]]
    assert flags == [(0, 1), (0, 1), (1, 0), (1, 0), (0, 0), (0, 1)]
    # psum_out at t+2 (registered after the product) is x * weight for each beat: 0, 0, 33, 39, -, 0
    sums = [p for _, _, p in seen]
    assert sums[2:6] == [0, 0, 33, 39] and sums[7] == 0


def test_pe_rejects_bad_widths():
    with pytest.raises(ValueError, match="acc_width must be an integer >= 2, not 0"):
        ProcessingElement(acc_width=0)


@pytest.mark.parametrize("rows, cols", [(1, 1), (3, 4), (4, 3), (8, 8)])
def test_array_matches_matmul(rows, cols, rng):
    dut = SystolicArray(rows=rows, cols=cols, acc_width=24)
    fs = folds(rng, rows, cols)
    beats = [(k == 0, W, x) for W, X in fs for k, x in enumerate(X)]
    expect = [x @ W for W, X in fs for x in X]
    got = []

    async def bench(ctx):
        for b in beats + [None] * (rows + cols + 3):
            ctx.set(dut.valid, b is not None)
            if b is not None:
                first, W, x = b
                ctx.set(dut.load, int(first))
                for i in range(rows):
                    ctx.set(dut.x[i], int(x[i]))
                    for j in range(cols):
                        ctx.set(dut.w[i][j], int(W[i][j]))
                        ctx.set(dut.w_nz[i][j], int(W[i][j] != 0))
            await ctx.tick()
            if ctx.get(dut.out_valid):
                got.append([ctx.get(dut.y[j]) for j in range(cols)])

    run(dut, bench)
    assert len(got) == len(expect)
    for g, e in zip(got, expect):
        np.testing.assert_array_equal(g, e)
    assert dut.latency == rows + cols + 1  # skew + deskew, plus the PE's operand and product registers


@pytest.mark.parametrize("acc_frac, out", [
    (13, {"bits": 8, "frac": 3, "signed": False, "relu": True}),
    (10, {"bits": 8, "frac": 4, "signed": True, "relu": False}),
    (4, {"bits": 8, "frac": 6, "signed": False, "relu": True}),
])
def test_requant_logic_equals_golden(acc_frac, out, rng):
    acc = Signal(signed(26))
    res = Signal(8)
    m = Module()
    round_, saturate = requant_logic(acc_frac, out)
    m.d.comb += res.eq(saturate(round_(acc)))
    values = np.concatenate([rng.integers(-2**24, 2**24, 300), np.arange(-40, 40), [2**25 - 1, -2**25]])
    want = requantize(values, acc_frac, out)
    got = []

    async def bench(ctx):
        for v in values:
            ctx.set(acc, int(v))
            raw = ctx.get(res)
            got.append(raw - 256 if out["signed"] and raw >= 128 else raw)

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("width, depth", [(16, 5), (16, 512), (16, 1300), (64, 1300)])
def test_block_ram_reads_what_was_written_read_latency_later(width, depth, rng):
    """Random writes (per byte lane) and reads across sub-memory boundaries (in depth and width) against a list."""
    from prunehw.hw.gateware.block_ram import READ_LATENCY, BlockRAM

    def word():
        return int.from_bytes(rng.integers(0, 256, width // 8).astype("uint8").tobytes(), "little")

    init = [word() for _ in range(depth)]
    dut = BlockRAM(width=width, depth=depth, granularity=8, init=init)
    ref = list(init)
    lanes = width // 8
    ops = [(int(rng.integers(depth)), int(rng.integers(depth)), word(), int(rng.integers(1 << lanes))) for _ in range(300)]
    got, want = [], []

    async def bench(ctx):
        pending = []
        for raddr, waddr, wdata, en in ops + [(0, 0, 0, 0)] * READ_LATENCY:
            ctx.set(dut.r_addr, raddr)
            ctx.set(dut.w_addr, waddr)
            ctx.set(dut.w_data, wdata)
            ctx.set(dut.w_en, en)
            pending.append(ref[raddr])  # a read sees the memory before this cycle's write
            for lane in range(lanes):
                if en >> lane & 1:
                    mask = 0xFF << (8 * lane)
                    ref[waddr] = (ref[waddr] & ~mask) | (wdata & mask)
            await ctx.tick()  # after the tick the testbench sees cycle t + 1: the read of cycle t + 1 - READ_LATENCY
            if len(pending) >= READ_LATENCY:
                want.append(pending[-READ_LATENCY])
                got.append(ctx.get(dut.r_data))

    run(dut, bench)
    assert got == want
