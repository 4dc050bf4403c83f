"""cocotb testbench of the generated accelerator: load, start, wait for done, check, in that order, per image.

The first image is loaded and run alone, and so is the second, so the
interval between their starts is the serial one (load, inference,
read-out); from then on each image is loaded into the image buffer's free
slot while the previous one runs, as a streaming host would, and the
intervals are the overlapped ones. Each result records its start time.

Small parts, one job each: the image driver asks the HDL harness to load an
image; the done monitor waits for ``done``; the reader samples logits and
counters; the in-order checker compares with the golden model's logits
(computed in Python before the run) and records every result. Sizes come from
the design's constant outputs. No per-cycle Python: the accelerator runs from
``start`` to ``done`` by itself.

Environment: ``PRUNEHW_EXPECTED`` (npz with ``logits``), ``PRUNEHW_RESULTS``
(JSON written at the end; rows numbered from the run's first image),
``PRUNEHW_FIRST``/``PRUNEHW_STOP`` (the harness's images this run checks),
``PRUNEHW_MAX_CYCLES`` (the timeout), and for the
mutation campaign's shared build ``PRUNEHW_FAULT_SELECT`` (the fault to switch on).
"""

from __future__ import annotations

import json
import logging
import os

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge, Timer, with_timeout
from cocotb.utils import get_sim_time

from prunehw.sim.wrapper import unpack_signed


class ImageDriver:
    def __init__(self, dut):
        self.dut, self.log = dut, logging.getLogger("prunehw.driver")

    async def reset(self):
        self.dut.rst.value = 1
        self.dut.load.value = 0
        self.dut.start.value = 0
        self.dut.img_index.value = 0
        if "PRUNEHW_FAULT_SELECT" in os.environ:  # the mutation campaign's shared build: which fault is on
            self.dut.fault_select.value = int(os.environ["PRUNEHW_FAULT_SELECT"])
        await RisingEdge(self.dut.clk)
        await RisingEdge(self.dut.clk)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    async def load(self, index: int):
        self.dut.img_index.value = index
        self.dut.load.value = 1
        await RisingEdge(self.dut.clk)
        self.dut.load.value = 0
        await RisingEdge(self.dut.loaded)

    async def start(self):
        self.dut.start.value = 1
        await RisingEdge(self.dut.clk)
        self.dut.start.value = 0


class DoneMonitor:
    """Waits for ``done``; a design that never finishes (``PRUNEHW_MAX_CYCLES`` clock periods) times out."""

    def __init__(self, dut, max_cycles: int, period_ns: int = 10):
        self.dut, self.limit_ns = dut, max_cycles * period_ns

    async def wait(self) -> bool:
        try:
            await with_timeout(RisingEdge(self.dut.done), self.limit_ns, "ns")
        except cocotb.triggers.SimTimeoutError:
            return False
        await Timer(1, "ns")
        return True


class Reader:
    def __init__(self, dut):
        self.dut = dut
        self.n_logits = int(dut.n_logits.value)
        self.n_counters = int(dut.n_counters.value)
        self.acc = int(dut.acc_bits.value)

    def logits(self) -> list[int]:
        return unpack_signed(int(self.dut.logits.value), self.n_logits, self.acc)

    def counters(self) -> list[int]:
        raw = int(self.dut.counters.value)
        return [(raw >> (32 * i)) & 0xFFFFFFFF for i in range(self.n_counters)]


class InOrderChecker:
    def __init__(self, expected: np.ndarray):
        self.expected, self.log = expected, logging.getLogger("prunehw.checker")
        self.results: list[dict] = []

    def timeout(self, index: int) -> None:
        self.results.append({"image": index, "match": False, "timeout": True, "logits": None, "counters": None})
        self.log.error("image %d: done never rose", index)

    def check(self, index: int, logits: list[int], counters: list[int], start_ns: int) -> bool:
        ok = logits == [int(v) for v in self.expected[index]]
        self.results.append({"image": index, "match": ok, "logits": logits, "counters": counters, "start_ns": start_ns})
        if not ok:
            self.log.error("image %d: logits %s, golden %s", index, logits, self.expected[index].tolist())
        return ok


@cocotb.test()
async def accelerator_matches_golden(dut):
    expected = np.load(os.environ["PRUNEHW_EXPECTED"])["logits"]
    driver, done = ImageDriver(dut), DoneMonitor(dut, int(os.environ["PRUNEHW_MAX_CYCLES"]))
    await driver.reset()  # constant outputs settle after time 0 in event-driven simulators
    reader = Reader(dut)
    checker = InOrderChecker(expected)
    # the images this run checks: first .. stop - 1 of those the harness holds (a shard of a longer regression)
    held = int(dut.n_images.value)
    first, stop = int(os.environ.get("PRUNEHW_FIRST", 0)), int(os.environ.get("PRUNEHW_STOP", held))
    n = stop - first
    assert 0 <= first < stop <= held, f"images {first}..{stop - 1} are not all in the harness's {held}"
    assert expected.shape == (n, reader.n_logits), f"expected logits {expected.shape} do not fit the run ({n}, {reader.n_logits})"
    loading = None
    for i in range(n):
        if loading is None:
            await driver.load(first + i)
        else:
            await loading          # (loaded during the previous inference)
        start_ns = int(get_sim_time("ns"))
        await driver.start()
        # from the second image on, the next one loads into the free slot while this one runs
        loading = cocotb.start_soon(driver.load(first + i + 1)) if 0 < i < n - 1 else None
        if not await done.wait():
            checker.timeout(i)
            break  # the design is stuck: later images cannot run
        checker.check(i, reader.logits(), reader.counters(), start_ns)
    with open(os.environ["PRUNEHW_RESULTS"], "w") as fh:
        json.dump(checker.results, fh)
    bad = [r["image"] for r in checker.results if not r["match"]]
    assert not bad, f"{len(bad)}/{n} images differ from the golden model, first: {bad[0]}"
