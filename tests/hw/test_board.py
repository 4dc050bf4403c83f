"""The board's serial link in Amaranth's simulator: the UART against a bit-level reference, and the host link in
front of a small accelerator driven through its serial pins with the host's protocol code (logits equal the golden
model, counters the activity model, every framing error answered as the protocol says)."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from contracts import conv_contract
from prunehw.core.config import ArrayConfig
from prunehw.export.golden import golden
from prunehw.hw.host import protocol as P
from prunehw.hw.gateware.accelerator import COUNTERS
from prunehw.hw.gateware.board_core import BoardCore
from prunehw.hw.models.cycle_model import activity_model, cycle_model
from prunehw.hw.compile.program import build_program
from prunehw.hw.gateware.uart import UARTRx, UARTTx, check_divisor

DIV = 4          # clock cycles per bit
TIMEOUT = 200    # cycles a frame may stall


async def ticks(ctx, n: int):
    for _ in range(n):      # (plain ticks: the simulator's tick().repeat()/until() generators do not close
        await ctx.tick()    # cleanly in a background testbench that is still waiting when the run ends)


async def until(ctx, cond):
    await ctx.tick()
    while not ctx.get(cond):
        await ctx.tick()


def line_bits(data: bytes) -> list[int]:
    """The reference serializer: 8N1, LSB first, one value per bit time."""
    return [b for byte in data for b in [0, *((byte >> i) & 1 for i in range(8)), 1]]


def test_uart_receives_and_sends_what_the_reference_line_carries():
    data = bytes([0x00, 0xFF, 0xA5, 0x5A, 0x01, 0x80]) + bytes(np.random.default_rng(0).integers(0, 256, 10).tolist())
    rx, tx = UARTRx(divisor=DIV), UARTTx(divisor=DIV)
    got, sent = [], []
    sim = Simulator_for(rx, tx)

    async def drive_rx(ctx):
        for bit in [1, 1, *line_bits(data), 1]:
            ctx.set(rx.rx, bit)
            await ticks(ctx, DIV)

    async def collect_rx(ctx):
        while len(got) < len(data):
            await ctx.tick()
            if ctx.get(rx.data.valid):
                got.append(ctx.get(rx.data.payload))

    async def drive_tx(ctx):
        for byte in data:
            ctx.set(tx.data.valid, 1)
            ctx.set(tx.data.payload, byte)
            await until(ctx, tx.data.ready)
            ctx.set(tx.data.valid, 0)
            await ctx.tick()

    async def watch_tx(ctx):
        while len(sent) < 12 * len(data) * DIV:
            await ctx.tick()
            sent.append(ctx.get(tx.tx))

    for bench in (drive_rx, drive_tx, collect_rx, watch_tx):
        sim.add_testbench(bench)
    sim.run()
    assert bytes(got) == data
    # the line, one sample per cycle: from each start bit on, the reference frame of the byte, every bit
    # held for DIV cycles (idle time between bytes allowed)
    i = 0
    for byte in data:
        i = sent.index(0, i)
        assert sent[i:i + 10 * DIV] == [b for b in line_bits(bytes([byte])) for _ in range(DIV)]
        i += 10 * DIV


def Simulator_for(*components):
    from amaranth import Module

    m = Module()
    for i, c in enumerate(components):
        m.submodules[f"c{i}"] = c
    sim = Simulator(m)
    sim.add_clock(1e-8)
    return sim


class SerialHost:
    """The host's end of a simulated serial line: requests framed by ``protocol.request`` go out bit by bit on
    the board's ``rx``, the board's ``tx`` is sampled mid-bit and parsed by ``protocol.ReplyParser``."""

    def __init__(self, dut):
        self.dut, self.parser, self.replies, self.raw = dut, P.ReplyParser(), [], bytearray()

    async def ask(self, ctx, data: bytes, limit: int = 100_000) -> P.Reply:
        """Send ``data`` and return the next reply (which may come while ``data`` is still going out)."""
        n = len(self.replies)
        for bit in line_bits(data):
            ctx.set(self.dut.rx, bit)
            await ticks(ctx, DIV)
        for _ in range(limit):
            if len(self.replies) > n:
                return self.replies[n]
            await ctx.tick()
        raise AssertionError(f"no reply to {data[:8].hex()}")

    async def listen(self, ctx):      # a process: runs as long as the simulation
        while True:
            await until(ctx, self.dut.tx == 0)
            await ticks(ctx, DIV // 2)
            byte = 0
            for i in range(8):
                await ticks(ctx, DIV)
                byte |= ctx.get(self.dut.tx) << i
            await ticks(ctx, DIV)
            assert ctx.get(self.dut.tx) == 1, "stop bit"
            self.raw.append(byte)
            self.replies += self.parser.feed(bytes([byte]))


@pytest.fixture(scope="module")
def board():
    rng = np.random.default_rng(3)
    contract = conv_contract(rng, 6, 6, 2, [(3, 1, "valid", 3)], pool=2, units=4)
    program = build_program(contract, ArrayConfig(rows=4, cols=4))
    images = rng.integers(0, 256, (2, 6, 6, 2)).astype(np.uint8)
    return contract, program, images


def run_host(program, script):
    dut = BoardCore(program=program, design=0x1234ABCD, divisor=DIV, timeout=TIMEOUT)
    host = SerialHost(dut)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(host.listen, background=True)

    async def bench(ctx):
        ctx.set(dut.rx, 1)
        await ticks(ctx, 5)
        await script(ctx, host)

    sim.add_testbench(bench)
    sim.run()
    return dut, host


def test_host_link_runs_images_bit_exact_with_the_counters_of_the_model(board):
    contract, program, images = board
    want = golden(contract, images)
    model, activity = cycle_model(program), activity_model(program)
    got = {}

    async def script(ctx, host):
        got["info"] = await host.ask(ctx, P.request("INFO"))
        got["early"] = await host.ask(ctx, P.request("LOGITS"))          # nothing ran yet
        got["runs"] = []
        for img in images:
            replies = []
            for req in (P.request("LOAD", img.tobytes()), P.request("START"), P.request("LOGITS"),
                        P.request("COUNTERS")):
                replies.append(await host.ask(ctx, req))
            got["runs"].append(replies)

    dut, host = run_host(program, script)
    info = P.BoardInfo.unpack(got["info"].payload)
    assert info == P.BoardInfo(0x1234ABCD, program.n_logits, len(COUNTERS) + len(program.ops), (6, 6, 2), DIV)
    assert got["early"].code == P.NOT_READY
    for (load, start, logits, counters), ref in zip(got["runs"], want):
        assert (load.code, load.payload, start.code, start.payload) == (P.COMMANDS["LOAD"], b"", P.COMMANDS["START"], b"")
        assert logits.code == P.COMMANDS["LOGITS"] and logits.words() == [int(v) for v in ref]
        values = dict(zip(list(COUNTERS) + [op.name for op in program.ops], counters.words()))
        assert {k: values[k] for k in COUNTERS} == activity
        assert {op.name: values[op.name] for op in program.ops} == model.per_op
    # byte for byte what the protocol's reference framing gives
    assert bytes(host.raw).startswith(P.reply(P.COMMANDS["INFO"], info.pack()) + P.reply(P.NOT_READY))


def test_host_link_answers_framing_errors_and_recovers(board):
    contract, program, images = board
    got = []

    async def script(ctx, host):
        for data, _ in P.framing_errors(images[0].tobytes()).values():
            got.append(await host.ask(ctx, data))
            await ticks(ctx, 2 * TIMEOUT)       # the refused frame's rest is dropped until the line is quiet
            got.append(await host.ask(ctx, P.request("INFO")))

    run_host(program, script)
    codes = [r.code for r in got]
    assert codes[0::2] == [code for _, code in P.framing_errors(images[0].tobytes()).values()] == \
        [P.BAD_COMMAND, P.BAD_LENGTH, P.BAD_CHECKSUM, P.TIMEOUT]
    assert codes[1::2] == [P.COMMANDS["INFO"]] * 4 and all(r.payload == got[1].payload for r in got[1::2])
    assert [got[i].error for i in (0, 2, 4, 6)] == ["bad command", "bad length", "bad checksum", "timeout inside a frame"]


def test_protocol_frames_round_trip_and_bad_values_are_refused():
    parser = P.ReplyParser()
    frames = P.reply(0x4C, bytes(range(12))) + b"\x00\x11" + P.reply(P.TIMEOUT)
    replies = parser.feed(frames[:7]) + parser.feed(frames[7:])
    assert [(r.code, r.payload) for r in replies] == [(0x4C, bytes(range(12))), (P.TIMEOUT, b"")]
    assert replies[0].words() == [0x03020100, 0x07060504, 0x0B0A0908] and parser.pending == 0
    assert sum(P.request("LOAD", b"\x01\x02")[1:]) % 256 == 0
    with pytest.raises(P.ProtocolError, match="bad checksum"):
        P.ReplyParser().feed(P.reply(0x4C, b"ab")[:-1] + b"\x00")
    with pytest.raises(ValueError, match="command 'RUN' is unknown; allowed: LOAD, START, LOGITS, COUNTERS, INFO"):
        P.request("RUN")
    with pytest.raises(ValueError, match="divisor must be an integer >= 4"):
        check_divisor(2)


@pytest.mark.regression
def test_a_board_top_that_misses_its_clock_gets_no_bitstream(board, tmp_path):
    """The small board top asked for 250 MHz: placed and routed on the ULX3S's pins, it stops before ecppack
    with one line naming the clock and the critical path."""
    from cli_helpers import need_tool

    from prunehw.hw.target.bitstream import BitstreamFailed, build_bitstream
    from prunehw.hw.target.ulx3s import Ulx3sTop, pll_parameters
    from prunehw.hw.target.synth import tools_missing

    need_tool(tools_missing())
    _, program, _ = board
    top = Ulx3sTop(BoardCore(program=program, design=1, divisor=50, timeout=1000), clock_mhz=250,
                   pll=pll_parameters(25, 250))
    with pytest.raises(BitstreamFailed) as exc:
        build_bitstream(top, tmp_path)
    msg = str(exc.value)
    assert "\n" not in msg and "fails timing at 250 MHz: achieved" in msg and "critical path" in msg
    assert not (tmp_path / "prunehw_board.bit").exists() and (tmp_path / "nextpnr.log").is_file()


@pytest.mark.regression
def test_the_icebreaker_bitstream_of_a_small_board_core(board, tmp_path):
    """The small board core in the iCEBreaker top: yosys synth_ice40, nextpnr-ice40 on the board's pins (the PCF
    from amaranth-boards' resources) at its 12 MHz, icepack; its buffers in SPRAM, the clock met."""
    from cli_helpers import need_tool

    from prunehw.hw.target.icebreaker import build_bitstream, pcf
    from prunehw.hw.target.synth import tools_missing

    need_tool(tools_missing("ice40"))
    assert pcf().splitlines() == ["set_io clk12 35", "set_io rx 6", "set_io tx 9", "set_io led_r 11", "set_io led_g 37",
                                  "set_frequency clk12 12"]
    from prunehw.hw.generate import array_for

    contract, program, _ = board
    array = array_for(contract, ArrayConfig(rows=program.rows, cols=program.cols), "iCE40UP5K")
    small = build_program(contract, array)         # (the 4x4 array's buffer copies would take 13 SPRAMs)
    assert array.rows * array.cols < 16 and sum(small.copies[:2]) + 2 * small.copies[2] <= 4
    res, bit = build_bitstream(BoardCore(program=small, design=1, divisor=12, timeout=1000), tmp_path)
    assert res.fits and res.meets_timing and res.fmax_mhz >= 12 and res.device == "iCE40UP5K"
    buffers = {m: where for m, where in res.memories.items() if ".act" in m or ".img_bank" in m}
    assert len(buffers) == sum(small.copies[:2]) + 2 * small.copies[2] and set(buffers.values()) == {"SPRAM"}
    assert 0 < res.spram <= len(buffers) and res.lut > 0     # (yosys may drop an SPRAM it finds constant)
    assert bit.name == "prunehw_board.bin" and bit.stat().st_size > 100_000


def test_pll_settings_come_from_ecppll_and_an_unreachable_clock_is_refused():
    from prunehw.hw.target.ulx3s import pll_parameters

    p = pll_parameters(25, 50)
    assert p["mhz"] == 50.0 and p["params"]["CLKI_DIV"] == 1
    # the output is the input times the feedback divider over the input divider, the VCO within 400..800 MHz
    assert 25 * p["params"]["CLKFB_DIV"] / p["params"]["CLKI_DIV"] == 50
    assert 400 <= 50 * p["params"]["CLKOP_DIV"] <= 800
    with pytest.raises(ValueError, match="the PLL reaches 65.625 MHz, not 66, from 25 MHz"):
        pll_parameters(25, 66)
