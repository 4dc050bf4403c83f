"""cocotb testbench of the board core: a host talks to it through its serial pins, with the host's protocol code.

The simulated serial line is two small parts: :class:`LineDriver` puts request bytes on ``rx`` bit by bit (8N1,
``divisor`` clock cycles a bit) and :class:`LineMonitor` samples ``tx`` in the middle of each bit and feeds
the bytes to :class:`prunehw.hw.host.protocol.ReplyParser` (the parser ``prunehw board-run`` uses on a real port). The
host asks INFO and checks it, then per image LOAD, START, LOGITS, COUNTERS, comparing the logits with the golden
model's and the counters with the analytic model's; then it sends the framing errors the protocol answers (an
unknown command, a wrong length, a wrong checksum, a frame that stalls) and checks each answer and that the link
then serves INFO again.

Environment: ``PRUNEHW_BOARD`` (npz: ``images``, ``logits``, ``counters``, ``info``: the packed INFO payload
expected), ``PRUNEHW_DIVISOR``, ``PRUNEHW_TIMEOUT`` (the link's, in cycles), ``PRUNEHW_RESULTS`` (JSON written
at the end).
"""

from __future__ import annotations

import json
import logging
import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge

from prunehw.hw.host import protocol as P

CLOCK_NS = 10


class LineDriver:
    """Drives the board's ``rx`` with bytes, 8N1, LSB first."""

    def __init__(self, dut, divisor: int):
        self.dut, self.divisor = dut, divisor

    async def send(self, data: bytes):
        for byte in data:
            for bit in [0, *((byte >> i) & 1 for i in range(8)), 1]:
                self.dut.rx.value = bit
                await ClockCycles(self.dut.clk, self.divisor)


class LineMonitor:
    """Samples the board's ``tx`` mid-bit; every byte goes to a reply parser, whole replies to ``replies``."""

    def __init__(self, dut, divisor: int):
        self.dut, self.divisor = dut, divisor
        self.parser, self.replies, self.log = P.ReplyParser(), [], logging.getLogger("prunehw.line")
        self._task = None

    def start(self):
        self._task = cocotb.start_soon(self._run())

    def stop(self):
        if self._task is not None:
            self._task.cancel()

    async def _run(self):
        while True:
            await FallingEdge(self.dut.tx)
            await ClockCycles(self.dut.clk, self.divisor // 2)
            byte = 0
            for i in range(8):
                await ClockCycles(self.dut.clk, self.divisor)
                byte |= int(self.dut.tx.value) << i
            await ClockCycles(self.dut.clk, self.divisor)
            if not int(self.dut.tx.value):
                self.log.error("stop bit low after byte %#04x", byte)
            self.replies += self.parser.feed(bytes([byte]))


class Host:
    """One request at a time, as a host on a serial port does: send, then wait for the reply (which may start
    while the request is still going out)."""

    def __init__(self, dut, divisor: int, limit: int):
        self.driver, self.monitor = LineDriver(dut, divisor), LineMonitor(dut, divisor)
        self.dut, self.limit = dut, limit

    async def ask(self, data: bytes) -> P.Reply | None:
        n = len(self.monitor.replies)
        await self.driver.send(data)
        for _ in range(self.limit // 64):
            if len(self.monitor.replies) > n:
                return self.monitor.replies[n]
            await ClockCycles(self.dut.clk, 64)
        return None


@cocotb.test()
async def board_serves_the_host(dut):
    ref = np.load(os.environ["PRUNEHW_BOARD"])
    divisor, timeout = int(os.environ["PRUNEHW_DIVISOR"]), int(os.environ["PRUNEHW_TIMEOUT"])
    images, want_logits, want_counters = ref["images"], ref["logits"], ref["counters"]
    # the longest wait for a reply: a LOAD's echo after its last byte, an inference, the counters' reply
    limit = 2 * (int(want_counters[0][0]) + 12 * divisor * (4 * len(want_counters[0]) + 16)) + 20 * timeout
    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    dut.rx.value = 1
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    host = Host(dut, divisor, limit)
    host.monitor.start()
    results = {"images": [], "errors": {}}

    info = await host.ask(P.request("INFO"))
    results["info_equal"] = info is not None and info.payload == bytes(ref["info"])
    early = await host.ask(P.request("LOGITS"))
    results["errors"]["logits_before_start"] = None if early is None else early.code
    for i, img in enumerate(images):
        replies = [await host.ask(P.request(c, img.tobytes() if c == "LOAD" else b""))
                   for c in ("LOAD", "START", "LOGITS", "COUNTERS")]
        codes = [None if r is None else r.code for r in replies]
        logits = replies[2].words() if replies[2] is not None else None
        counters = replies[3].words() if replies[3] is not None else None
        results["images"].append({
            "image": i, "codes": codes, "logits": logits, "counters": counters,
            "match": logits == [int(v) for v in want_logits[i]],
            "counters_equal": counters == [int(v) for v in want_counters[i]]})
    cases = P.framing_errors(images[0].tobytes())
    for name, (data, _) in cases.items():
        answer = await host.ask(data)
        await ClockCycles(dut.clk, 2 * timeout)         # the rest of a refused frame is dropped until quiet
        again = await host.ask(P.request("INFO"))
        results["errors"][name] = None if answer is None else answer.code
        results["errors"][name + "_then_info"] = again is not None and again.payload == bytes(ref["info"])
    want = {"logits_before_start": P.NOT_READY, **{k: code for k, (_, code) in cases.items()},
            **{f"{k}_then_info": True for k in cases}}
    results["errors_as_expected"] = results["errors"] == want
    host.monitor.stop()
    with open(os.environ["PRUNEHW_RESULTS"], "w") as fh:
        json.dump(results, fh)
    assert results["info_equal"], "INFO differs from the design's"
    assert all(r["match"] and r["counters_equal"] for r in results["images"]), "logits or counters differ"
    assert results["errors_as_expected"], results["errors"]
