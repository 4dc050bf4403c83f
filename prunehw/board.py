"""A variant on a board (``[board] name``: the ULX3S-85F or the iCEBreaker): the board core proven in simulation
through its serial pins, the bitstream, and the host that runs test images through a real board (``prunehw
board``, ``make bitstream``, ``prunehw board-run``).

Files under ``<run>/<variant>/board/`` (``board/iCEBreaker/`` for the iCEBreaker): ``sim_<simulator>/`` (the
board core's Verilog and the cocotb run: a host on its serial pins), ``bitstream/`` (the board top's Verilog and
constraints, the tools' logs, ``prunehw_board.bit``, or ``.bin`` for the iCE40). Figures go to ``summary.json``
under the variant's ``board`` (``board.iCEBreaker``). On the iCEBreaker the accelerator is built on the largest
array the UP5K's memories hold (:func:`~prunehw.hw.generate.array_for`); a variant they hold on none is refused
in one line before anything is built.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from prunehw.core.artifacts import (code_closure, code_digest, read_json, record_stage, sha256_file, stage_is_current,
                                    stage_key, update_variant, write_json)
from prunehw.core.errors import PrunehwError

__all__ = ["BoardError", "SerialHost", "board_core", "simulate_board", "build_bitstream", "board_run"]


class BoardError(PrunehwError):
    """No board answers, or it answers what it should not; the message says which and what to do."""


def _program(flow, variant: str, device: str | None = None):
    """(the variant's accelerator program on part ``device``, by default the board's; its contract's path)."""
    from prunehw.export.contract import load_contract
    from prunehw.hw.generate import array_for, program_for

    contract = flow.quantize(variant)
    loaded = load_contract(contract)
    return program_for(loaded, array_for(loaded, flow.cfg.array, device or flow.cfg.board.device)), contract


def _folder(flow, variant: str) -> Path:
    """The variant's board folder: ``board/`` for the ULX3S-85F, ``board/<name>/`` for another board."""
    name = flow.cfg.board.name
    return flow.layout.board(variant) if name == "ULX3S-85F" else flow.layout.board(variant) / name


def _record(flow, variant: str, entries: dict) -> None:
    """``entries`` into the variant's ``board`` summary (``board.<name>`` for a board other than the ULX3S-85F)."""
    name = flow.cfg.board.name
    update_variant(flow.run_dir, variant, {"board": entries if name == "ULX3S-85F" else {name: entries}})


def _stage(flow, stage: str) -> str:
    name = flow.cfg.board.name
    return stage if name == "ULX3S-85F" else f"{stage}:{name}"


def board_core(flow, variant: str, *, divisor: int, timeout: int, device: str | None = None):
    """(the variant's :class:`~prunehw.hw.gateware.board_core.BoardCore` on part ``device``, by default the
    board's; its program; its contract's path)."""
    from prunehw.hw.gateware.board_core import BoardCore, design_id

    program, contract = _program(flow, variant, device)
    core = BoardCore(program=program, design=design_id(contract.read_bytes()), divisor=divisor, timeout=timeout)
    return core, program, contract


def _expected(flow, program, contract_path: Path, n: int) -> dict:
    """The host's references for the first ``n`` test images: golden logits and the analytic counters (the
    counters, then one cycle count per op, in host-port order)."""
    from prunehw.export.contract import load_contract
    from prunehw.export.golden import golden
    from prunehw.hw.models.cycle_model import expected_counters

    images = flow.data.x_test[:n]
    images = images[..., None] if images.ndim == 3 else images
    counters = expected_counters(program)
    return {"images": images.astype(np.uint8), "logits": golden(load_contract(contract_path), images),
            "counters": np.array([counters] * n, dtype=np.int64)}


def simulate_board(flow, variant: str, simulator: str = "verilator", force: bool = False) -> dict:
    """The board core of ``variant`` in ``simulator`` with a host on its serial pins (``sim.tb_board``): the first
    ``[board] sim_images`` test images bit-exact, counters equal to the model, framing errors answered. Cached."""
    from prunehw.hw.target.ulx3s import BOARD_TOP, write_board_verilog
    from prunehw.hw.target.ecp5 import MODELS_FILE
    from prunehw.hw.target.icebreaker import write_core_verilog
    from prunehw.sim.runner import run_board

    b = flow.cfg.board
    out = _folder(flow, variant) / f"sim_{simulator}"
    contract = flow.quantize(variant)
    key = stage_key(sha256_file(contract), sha256_file(contract.with_name("weights.npz")), flow.cfg.key("array", "board"),
                    simulator, code_digest("hw"), code_digest("sim"), code_closure(__name__),
                    sha256_file(flow.sim_images()))
    stage = _stage(flow, f"board-sim:{simulator}:{variant}")
    if not force and stage_is_current(flow.run_dir, stage, key):
        flow.log(f"board sim {variant}: up to date, {out}")
        return read_json(out / "board_sim.json")
    timeout = 64 * 10 * b.sim_divisor            # cycles: 64 bytes' time on the line
    core, program, contract = board_core(flow, variant, divisor=b.sim_divisor, timeout=timeout)
    n = min(b.sim_images, len(flow.data.x_test))
    ref = _expected(flow, program, contract, n)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "reference.npz", **ref, info=np.frombuffer(core.info.pack(), dtype=np.uint8))
    if b.name == "iCEBreaker":     # (its flavour: buffers in single-port RAM, no primitive, no models)
        write_core_verilog(core, out)
        sources = [f"{BOARD_TOP}.v"]
    else:
        write_board_verilog(core, out)
        sources = [MODELS_FILE, f"{BOARD_TOP}.v"]
    t0 = time.perf_counter()
    res = run_board(out, BOARD_TOP, simulator, out, out / "reference.npz", b.sim_divisor, timeout, sources)
    imgs = res["images"]
    entry = {"simulator": simulator, "images": len(imgs), "match": sum(r["match"] for r in imgs),
             "counters_equal": sum(r["counters_equal"] for r in imgs), "info_equal": res["info_equal"],
             "errors_answered": res["errors"], "errors_as_expected": res["errors_as_expected"],
             "divisor": b.sim_divisor, "timeout_cycles": timeout, "seconds": round(time.perf_counter() - t0, 1)}
    if b.name != "ULX3S-85F":
        entry["array"] = f"{program.rows}x{program.cols}"
    path = write_json(out / "board_sim.json", entry)
    _record(flow, variant, {f"sim_{simulator}": entry})
    ok = entry["match"] == entry["counters_equal"] == entry["images"] and res["info_equal"] and res["errors_as_expected"]
    if not ok:
        raise BoardError(f"board sim {variant}: {entry['match']}/{entry['images']} images bit-exact, counters "
                         f"{entry['counters_equal']}/{entry['images']}, INFO {'right' if res['info_equal'] else 'WRONG'}, "
                         f"framing errors answered {res['errors']}; see {out}")
    record_stage(flow.run_dir, stage, key, [path])
    flow.log(f"board sim {variant}{'' if b.name == 'ULX3S-85F' else ' on the ' + b.name}: {simulator}, a host on the serial pins: {entry['match']}/{entry['images']} images "
             f"bit-exact, counters equal to the model on {entry['counters_equal']}/{entry['images']}, every framing "
             f"error answered as the protocol says ({entry['seconds']:.0f} s); {out}")
    return entry


def build_bitstream(flow, variant: str, force: bool = False) -> dict:
    """The variant's board top (``[board]`` board, clock and baud) through yosys, nextpnr on the board's pins and
    the family's packer: ``<variant>/board/bitstream/prunehw_board.bit`` on the ULX3S-85F (ecppack),
    ``<variant>/board/iCEBreaker/bitstream/prunehw_board.bin`` on the iCEBreaker (icepack). Cached; returns the
    summary's ``board.bitstream`` entry. A missing tool, a design that does not fit or misses its clock stops with
    one line."""
    from prunehw.hw.target.bitstream import BitstreamFailed, build_bitstream as build_ulx3s
    from prunehw.hw.target.devices import device
    from prunehw.hw.target.icebreaker import build_bitstream as build_icebreaker
    from prunehw.hw.target.ulx3s import BOARD_TOP, Ulx3sTop, pll_parameters
    from prunehw.hw.models.cycle_model import cycle_model
    from prunehw.hw.target.synth import tool_versions, tools_missing

    b, seed = flow.cfg.board, flow.cfg.synth.seed
    family = device(b.device).family
    reason = tools_missing(family)
    if reason:
        from prunehw.synth_report import ToolMissing

        raise ToolMissing(reason)
    out = _folder(flow, variant) / "bitstream"
    contract = flow.quantize(variant)
    key = stage_key(sha256_file(contract), sha256_file(contract.with_name("weights.npz")), flow.cfg.key("array", "board"),
                    seed, tool_versions(family), code_digest("hw"), code_closure(__name__))
    stage = _stage(flow, f"bitstream:{variant}")
    suffix = ".bin" if family == "ice40" else ".bit"
    if not force and stage_is_current(flow.run_dir, stage, key):
        flow.log(f"bitstream {variant}: up to date, {out / (BOARD_TOP + suffix)}")
        return read_json(out / "bitstream.json")
    core, program, _ = board_core(flow, variant, divisor=b.divisor, timeout=b.timeout_cycles)
    pll = None
    if b.name == "ULX3S-85F":
        try:
            pll = None if b.clock == 25 else pll_parameters(25, b.clock)
        except ValueError as exc:
            raise BoardError(f"board.clock_mhz = {b.clock:g}: {exc}") from None
    from tqdm.auto import tqdm

    with tqdm(total=None, desc=f"bitstream {variant}", bar_format="{desc}: {elapsed}{postfix}") as bar:
        say = lambda step, s: bar.set_postfix_str(f"{step} {s:.0f}s", refresh=True)   # noqa: E731
        try:
            if b.name == "ULX3S-85F":
                res, bit = build_ulx3s(Ulx3sTop(core, clock_mhz=b.clock, pll=pll), out, seed, progress=say)
            else:
                res, bit = build_icebreaker(core, out, seed, progress=say)
        except BitstreamFailed as exc:
            raise BoardError(f"bitstream {variant}: {exc}") from None
    entry = {**{k: v for k, v in res.to_dict().items() if k not in ("cells", "memories")},
             "board": b.name, "clock_mhz": b.clock, "pll": pll, "baud": b.baud, "divisor": b.divisor,
             "bitstream": str(bit), "bitstream_bytes": bit.stat().st_size, "cycles_per_image": cycle_model(program).total,
             **({"array": f"{program.rows}x{program.cols}"} if b.name != "ULX3S-85F" else {})}
    path = write_json(out / "bitstream.json", entry)
    _record(flow, variant, {"bitstream": entry})
    record_stage(flow.run_dir, stage, key, [path, bit])
    clock = f"{b.clock:g} MHz (PLL from 25 MHz" if pll else f"{b.clock:g} MHz (its oscillator"
    memory = f"{res.bram} EBR" + (f", {res.spram} SPRAM" if res.spram is not None else "")
    flow.log(f"bitstream {variant}: {b.name} at {clock}; routed Fmax {res.fmax_mhz:g} MHz), "
             f"{res.lut} LUT4, {res.ff} FF, {res.dsp} DSP, {memory}; serial {b.baud} baud; wrote {bit}")
    return entry


#: How each board is given its bitstream, and where its serial port is.
LOAD_HINTS = {"ULX3S-85F": "openFPGALoader --board ulx3s <prunehw_board.bit>", "iCEBreaker": "iceprog <prunehw_board.bin>"}
PLUG_HINTS = {"ULX3S-85F": "the ULX3S's USB port (US1)", "iCEBreaker": "the iCEBreaker's USB port (its UART is the FTDI's second channel)"}


class SerialHost:
    """The host's end of the link over a byte port (pyserial's ``Serial``, or anything with ``write`` and a
    ``read`` that returns what arrived within its timeout): one request at a time, framed and parsed by
    :mod:`prunehw.hw.host.protocol`."""

    def __init__(self, port, timeout_s: float, load_hint: str = LOAD_HINTS["ULX3S-85F"]):
        from prunehw.hw.host.protocol import ReplyParser

        self.port, self.timeout_s, self.parser, self.load_hint = port, timeout_s, ReplyParser(), load_hint

    def ask(self, command: str, payload: bytes = b"", expect_error: bool = False):
        from prunehw.hw.host.protocol import COMMANDS, ProtocolError, request

        self.port.write(request(command, payload))
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            data = self.port.read(64)
            try:
                replies = self.parser.feed(data) if data else []
            except ProtocolError as exc:
                raise BoardError(f"{command}: {exc}") from None
            if replies:
                reply = replies[0]
                if reply.code != COMMANDS[command] and not expect_error:
                    raise BoardError(f"{command}: the board answered {reply.error or f'code {reply.code:#04x}'}")
                return reply
        raise BoardError(f"no reply to {command} within {self.timeout_s:g} s: is the bitstream loaded "
                         f"({self.load_hint}) and is the baud rate the bitstream's?")


def board_run(flow, variant: str, port: str, images: int, baud: int | None = None, timeout_s: float = 2.0,
              open_port=None) -> dict:
    """Run the first ``images`` test images through a board holding ``variant``'s bitstream on serial ``port``:
    checks INFO (the design id is the variant's contract's), then per image LOAD, START, LOGITS against the golden
    model, and the first image's counters against the analytic model. Returns the figures (also in the summary's
    ``board.run``). ``open_port(port, baud)``: how to open it (default pyserial)."""
    from prunehw.hw.gateware.board_core import design_id
    from prunehw.hw.host.protocol import BoardInfo

    baud = baud or flow.cfg.board.baud
    if images < 1:
        raise BoardError(f"--images {images}; allowed: at least 1")
    if open_port is None:
        import serial

        def open_port(name, rate):
            try:
                return serial.serial_for_url(name, baudrate=rate, timeout=0.05)
            except (serial.SerialException, OSError, ValueError) as exc:
                raise BoardError(f"no board at {name}: {str(exc).splitlines()[0]}; plug {PLUG_HINTS[flow.cfg.board.name]} "
                                 f"in and give its serial device (e.g. --port /dev/ttyUSB0)") from None
    link = open_port(port, baud)     # (first: no board is the likeliest error)
    program, contract = _program(flow, variant)
    n = min(images, len(flow.data.x_test))
    ref = _expected(flow, program, contract, n)
    try:
        host = SerialHost(link, timeout_s, LOAD_HINTS[flow.cfg.board.name])
        info = BoardInfo.unpack(host.ask("INFO").payload)
        if info.design_id != design_id(contract.read_bytes()):
            raise BoardError(f"the board holds design {info.design_id:#010x}, not {variant}'s "
                             f"{design_id(contract.read_bytes()):#010x}: load {variant}'s bitstream (prunehw board "
                             f"--variant {variant})")
        from tqdm.auto import tqdm

        wrong, t0 = [], time.perf_counter()
        for i in tqdm(range(n), desc=f"board-run {variant}", unit="image"):
            host.ask("LOAD", ref["images"][i].tobytes())
            host.ask("START")
            logits = host.ask("LOGITS").words()
            if logits != [int(v) for v in ref["logits"][i]]:
                wrong.append(i)
            if i == 0:
                counters_equal = host.ask("COUNTERS").words() == [int(v) for v in ref["counters"][0]]
        seconds = time.perf_counter() - t0
    finally:
        link.close()
    entry = {"port": port, "baud": baud, "images": n, "match": n - len(wrong), "mismatched_images": wrong[:20],
             "counters_equal": counters_equal, "seconds": round(seconds, 2), "images_per_s": round(n / seconds, 1)}
    _record(flow, variant, {"run": entry})
    flow.log(f"board-run {variant}: {entry['match']}/{n} images bit-exact on the board at {port}, "
             f"{entry['images_per_s']} images/s ({baud} baud); counters of image 0 "
             f"{'equal to' if counters_equal else 'DIFFERENT from'} the model")
    return entry
