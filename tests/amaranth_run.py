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
            logits = [ctx.get(dut.logits[i]) for i in range(program.n_logits)]
            counters = {n: ctx.get(dut.counters[i]) for i, n in enumerate(names)}
            results.append((logits, counters))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return results
