"""Run the whole-network accelerator in Amaranth's simulator: the same protocol the cocotb testbench drives."""

import numpy as np
from amaranth.sim import Simulator

from prunehw.hw.accelerator import COUNTERS, Accelerator


def run_images(program, images: np.ndarray):
    """[(logits, {counter: value})] for each uint8 image (H x W x C)."""
    dut = Accelerator(program)
    names = list(COUNTERS) + [op.name for op in program.ops]
    results = []

    async def bench(ctx):
        for img in images:
            h, w, c = img.shape
            for pix in range(h * w):
                for ch in range(c):
                    ctx.set(dut.img_we, 1)
                    ctx.set(dut.img_pixel, pix)
                    ctx.set(dut.img_chan, ch)
                    ctx.set(dut.img_data, int(img.reshape(h * w, c)[pix, ch]))
                    await ctx.tick()
            ctx.set(dut.img_we, 0)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            await ctx.tick().until(dut.done)
            # read the register bank through the host port: the word comes one cycle after its address
            words = []
            for a in range(program.n_logits + len(names)):
                ctx.set(dut.csr_addr, a)
                await ctx.tick()
                words.append(ctx.get(dut.csr_data))
            logits = [w - (1 << 32) if w >> 31 else w for w in words[:program.n_logits]]
            counters = dict(zip(names, words[program.n_logits:]))
            results.append((logits, counters))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return results
