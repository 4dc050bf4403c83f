"""Run the whole-network accelerator in Amaranth's simulator: the same protocol the cocotb testbench drives."""

import numpy as np
from amaranth.sim import Simulator

from prunehw.hw.gateware.accelerator import COUNTERS, Accelerator


def run_images(program, images: np.ndarray, *, overlap: bool = False, fault: str | None = None, taps=None,
               select: int = 0):
    """[(logits, {counter: value})] for each uint8 image (H x W x C).

    With ``overlap`` the next image is loaded while the current one is
    computed (the image buffer's other slot), as a streaming host would;
    otherwise each image is loaded, then started. Each result also has
    ``start_cycle``, the cycle its ``start`` was given. ``taps`` with ``select``: a build holding many faults
    (``sim.faults.SelectTaps``) with fault number ``select`` switched on.
    """
    if fault is not None:
        from prunehw.sim.faults import FaultTaps

        taps = FaultTaps(fault)
    dut = Accelerator(program=program, taps=taps)
    names = list(COUNTERS) + [op.name for op in program.ops]
    results = []
    cycle = [0]

    async def tick(ctx):
        await ctx.tick()
        cycle[0] += 1

    async def load(ctx, img):
        h, w, c = img.shape
        for pix in range(h * w):
            for ch in range(c):
                ctx.set(dut.img_we, 1)
                ctx.set(dut.img_pixel, pix)
                ctx.set(dut.img_chan, ch)
                ctx.set(dut.img_data, int(img.reshape(h * w, c)[pix, ch]))
                await tick(ctx)
        ctx.set(dut.img_we, 0)

    async def bench(ctx):
        if hasattr(dut, "fault_select"):   # a shared mutant build (``SelectTaps``): switch one fault on, or none (0)
            ctx.set(dut.fault_select, select)
        if overlap:
            await load(ctx, images[0])
        for i, img in enumerate(images):
            if not overlap:
                await load(ctx, img)
            started = cycle[0]
            ctx.set(dut.start, 1)
            await tick(ctx)
            ctx.set(dut.start, 0)
            if overlap and i + 1 < len(images):
                await load(ctx, images[i + 1])     # into the other slot, while this image runs
                assert ctx.get(dut.busy), "the load outlasted the inference: nothing overlapped"
            while not ctx.get(dut.done):
                await tick(ctx)
            # read the register bank through the host port: the word comes one cycle after its address
            words = []
            for a in range(program.n_logits + len(names)):
                ctx.set(dut.csr_addr, a)
                await tick(ctx)
                words.append(ctx.get(dut.csr_data))
            logits = [w - (1 << 32) if w >> 31 else w for w in words[:program.n_logits]]
            counters = dict(zip(names, words[program.n_logits:]), start_cycle=started)
            results.append((logits, counters))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return results
