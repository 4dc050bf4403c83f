"""The iCE40 UltraPlus flavour: buffers in single-port RAM (their read and write ports sharing one address), the
array chosen to fit the part before any tool runs, a design that fits on no array refused in one line, and the
Verilog yosys maps to SPRAM (no initial contents, no multiplier primitive)."""

import re

import numpy as np
import pytest
from amaranth.sim import Simulator
from contracts import conv_contract

from prunehw.core.config import ArrayConfig
from prunehw.core.errors import ConfigError
from prunehw.hw.gateware.block_ram import READ_LATENCY, BlockRAM
from prunehw.hw.generate import array_for, generate_verilog, program_for
from prunehw.hw.gateware.accelerator import Accelerator
from prunehw.hw.target.devices import device
from prunehw.hw.target.ice40 import ebr_blocks, fit_problem, memory_map


def test_a_single_port_ram_reads_what_was_written_and_serves_two_parts_at_once():
    """Two parts (the image slots): a part is written while the other is read in the same cycle; every read
    returns its word READ_LATENCY cycles later; a read while its own part is written is not made (the word read
    before stays)."""
    dut = BlockRAM(width=16, depth=64, granularity=8, single_port=True, parts=2)
    got = []

    async def bench(ctx):
        for a in range(64):                                   # fill both parts
            ctx.set(dut.w_addr, a), ctx.set(dut.w_data, a * 257 & 0xFFFF), ctx.set(dut.w_en, 0b11)
            await ctx.tick()
        ctx.set(dut.w_en, 0)
        # read part 0 while part 1 is written (one lane), each cycle
        for a in range(8):
            ctx.set(dut.r_addr, a), ctx.set(dut.r_en, 1)
            ctx.set(dut.w_addr, 32 + a), ctx.set(dut.w_data, 0xAB00), ctx.set(dut.w_en, 0b10)
            await ctx.tick()
            got.append(ctx.get(dut.r_data))
        ctx.set(dut.w_en, 0)
        for a in range(READ_LATENCY + 8):                     # then part 1 back (and the last reads of part 0)
            ctx.set(dut.r_addr, 32 + a % 8)
            await ctx.tick()
            got.append(ctx.get(dut.r_data))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    # a read made before tick t shows on r_data after tick t + READ_LATENCY - 1
    part0 = got[READ_LATENCY - 1:READ_LATENCY - 1 + 8]
    assert part0 == [a * 257 for a in range(8)]
    part1 = got[8 + READ_LATENCY - 1:8 + READ_LATENCY - 1 + 8]
    assert part1 == [0xAB00 | ((32 + a) * 257 & 0xFF) for a in range(8)]      # (the high lane rewritten)


def test_a_single_port_ram_refuses_what_the_spram_cannot_be():
    with pytest.raises(ValueError, match="no initial contents"):
        BlockRAM(width=8, depth=16, single_port=True, init=[1])
    with pytest.raises(ValueError, match="parts must be a power of two"):
        BlockRAM(width=8, depth=16, parts=2)


def test_block_ram_blocks_are_counted_in_the_cheapest_shape():
    assert ebr_blocks(16, 256) == 1 and ebr_blocks(4, 20_896) == 21 and ebr_blocks(25, 512) == 4
    assert ebr_blocks(50, 676) == 12 and ebr_blocks(8, 10_448) == 21


def _contract(convs, units=4, size=12):
    return conv_contract(np.random.default_rng(0), size, size, 1, convs, pool=2, units=units)


def test_the_ice40_array_is_the_largest_the_part_holds():
    """A small network keeps an array whose buffers fit the four SPRAMs and whose ROMs fit the block RAM; each
    larger array is refused by the same check; a network too big for any array is refused in one line with what
    the part lacks on 1x1. An ECP5 part keeps the array asked for."""
    up5k = device("iCE40UP5K")
    contract = _contract([(3, 1, "valid", 8)])
    chosen = array_for(contract, ArrayConfig(), "iCE40UP5K")
    accel = Accelerator(program=program_for(contract, chosen))
    accel._MustUse__silence = True
    assert fit_problem(up5k, accel) is None
    where = memory_map(accel)
    assert where["feeder.rtrom"] == ("logic", 0) and where["writeback.psum"][0] == "ebr"
    assert sum(n for kind, n in where.values() if kind == "spram") <= 4
    assert {k for k, (kind, _) in where.items() if kind == "spram"} == {"act0_bank0", "act1_bank0", "img_bank0"} or \
        all(k.startswith(("act", "img")) for k, (kind, _) in where.items() if kind == "spram")
    for rows, cols in ((8, 8), (4, 4)):
        if rows * cols > chosen.rows * chosen.cols:
            big = Accelerator(program=program_for(contract, ArrayConfig(rows=rows, cols=cols)))
            big._MustUse__silence = True
            assert fit_problem(up5k, big) is not None
    assert array_for(contract, ArrayConfig(), "LFE5U-85F") == ArrayConfig()
    # weights beyond the block RAM on every array: one line, what is short on the smallest array
    huge = _contract([(3, 1, "valid", 64), (3, 1, "valid", 64)], units=10, size=28)
    with pytest.raises(ConfigError) as err:
        array_for(huge, ArrayConfig(), "iCE40UP5K")
    line = str(err.value)
    assert "\n" not in line and re.match(
        r"^does not fit the iCE40UP5K on a 1x1 array: block RAM: needs \d+ of its 30 SB_RAM40_4K \(feeder\.wrom alone "
        r"\d+\); allowed: ", line), line


def test_the_ice40_verilog_has_spram_buffers_without_contents_and_no_primitive(tmp_path):
    contract = _contract([(3, 1, "valid", 8)])
    verilog, desc_path, desc = generate_verilog(contract, ArrayConfig(), tmp_path, device="iCE40UP5K")
    text = verilog.read_text()
    assert "MULT18X18D" not in text and not (tmp_path / "ecp5_models.v").exists()
    assert desc["sim_models"] == [] and desc["device"] == "iCE40UP5K"
    shapes = desc["memory_shapes"]      # (as this flavour builds them: a buffer, and each image slot, one memory)
    assert {"act0_bank0.part0", "act1_bank0.part0", "img_bank0.part0", "img_bank0.part1"} <= set(shapes)
    assert not any(n.startswith(("act", "img")) and ".sub" in n for n in shapes)
    huge = re.findall(r'\(\* ram_style = "huge" \*\)\s*reg \[\d+:0\] (\S+) ', text)
    assert len(huge) == 4, huge           # (both ping-pong buffers and the image's two slots)
    for mem in huge:                      # (no initial contents: yosys maps only such a memory to SPRAM)
        assert not re.search(rf"^\s*{re.escape(mem)}\s*\[\d+\] = ", text, re.M), mem
    assert re.search(r"^\s*\\feeder\.rtrom\s*\[\d+\] = ", text, re.M)      # (the ROMs keep theirs)
