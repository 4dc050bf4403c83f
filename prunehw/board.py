"""A variant on the ULX3S-85F: the board core proven in simulation through its serial pins, the bitstream, and
the host that runs test images through a real board (``prunehw board``, ``make bitstream``, ``prunehw board-run``).

Files under ``<run>/<variant>/board/``: ``sim/`` (the board core's Verilog and the cocotb run: a host on its
serial pins), ``bitstream/`` (the board top's Verilog and constraints, the tools' logs, ``prunehw_board.bit``).
Figures go to ``summary.json`` under the variant's ``board``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from prunehw.core.artifacts import read_json, record_stage, sha256_file, stage_is_current, update_variant
from prunehw.core.artifacts import code_digest, stage_key
from prunehw.core.errors import PrunehwError

__all__ = ["BoardError", "board_core", "simulate_board", "build_bitstream", "board_run"]


class BoardError(PrunehwError):
    """No board answers, or it answers what it should not; the message says which and what to do."""


def board_core(flow, variant: str, *, divisor: int, timeout: int):
    """(the variant's :class:`~prunehw.hw.board.BoardCore`, its program, its contract's path)."""
    from prunehw.export.contract import load_contract
    from prunehw.hw.board import BoardCore, design_id
    from prunehw.hw.generate import program_for

    contract = flow.quantize(variant)
    program = program_for(load_contract(contract), flow.cfg.array)
    core = BoardCore(program, design=design_id(contract.read_bytes()), divisor=divisor, timeout=timeout)
    return core, program, contract


def _expected(flow, variant: str, program, contract_path: Path, n: int) -> dict:
    """The host's references for the first ``n`` test images: golden logits and the analytic counters (the
    counters, then one cycle count per op, in host-port order)."""
    from prunehw.export.contract import load_contract
    from prunehw.export.golden import golden
    from prunehw.hw.accelerator import COUNTERS
    from prunehw.hw.cycle_model import activity_model, cycle_model

    images = flow.data.x_test[:n]
    images = images[..., None] if images.ndim == 3 else images
    act, per_op = activity_model(program), cycle_model(program).per_op
    counters = [act[k] for k in COUNTERS] + [per_op[op.name] for op in program.ops]
    return {"images": images.astype(np.uint8), "logits": golden(load_contract(contract_path), images),
            "counters": np.array([counters] * n, dtype=np.int64)}


def simulate_board(flow, variant: str, simulator: str = "verilator", force: bool = False) -> dict:
    """The board core of ``variant`` in ``simulator`` with a host on its serial pins (``sim.tb_board``): the first
    ``[board] sim_images`` test images bit-exact, counters equal to the model, framing errors answered. Cached."""
    from prunehw.hw.board import BOARD_TOP, write_board_verilog
    from prunehw.hw.ecp5 import MODELS_FILE
    from prunehw.sim.runner import run_board

    b = flow.cfg.board
    out = flow.run_dir / variant / "board" / f"sim_{simulator}"
    contract = flow.quantize(variant)
    key = stage_key(sha256_file(contract), sha256_file(contract.with_name("weights.npz")), flow.cfg.key("array", "board"),
                    simulator, code_digest("hw"), code_digest("sim"), sha256_file(flow.sim_images()))
    stage = f"board-sim:{simulator}:{variant}"
    if not force and stage_is_current(flow.run_dir, stage, key):
        flow.log(f"board sim {variant}: up to date, {out}")
        return read_json(out / "board_sim.json")
    timeout = 64 * 10 * b.sim_divisor            # cycles: 64 bytes' time on the line
    core, program, contract = board_core(flow, variant, divisor=b.sim_divisor, timeout=timeout)
    n = min(b.sim_images, len(flow.data.x_test))
    ref = _expected(flow, variant, program, contract, n)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "reference.npz", **ref, info=np.frombuffer(core.info.pack(), dtype=np.uint8))
    write_board_verilog(core, out)
    t0 = time.perf_counter()
    res = run_board(out, BOARD_TOP, simulator, out, out / "reference.npz", b.sim_divisor, timeout,
                    [MODELS_FILE, f"{BOARD_TOP}.v"])
    imgs = res["images"]
    entry = {"simulator": simulator, "images": len(imgs), "match": sum(r["match"] for r in imgs),
             "counters_equal": sum(r["counters_equal"] for r in imgs), "info_equal": res["info_equal"],
             "errors_answered": res["errors"], "divisor": b.sim_divisor, "timeout_cycles": timeout,
             "seconds": round(time.perf_counter() - t0, 1)}
    from prunehw.core.artifacts import write_json

    path = write_json(out / "board_sim.json", entry)
    update_variant(flow.run_dir, variant, {"board": {f"sim_{simulator}": entry}})
    record_stage(flow.run_dir, stage, key, [path])
    flow.log(f"board sim {variant}: {simulator}, a host on the serial pins: {entry['match']}/{entry['images']} images "
             f"bit-exact, counters equal to the model on {entry['counters_equal']}/{entry['images']}, framing errors "
             f"answered: {', '.join(f'{k} {v:#04x}' for k, v in res['errors'].items() if isinstance(v, int) and not isinstance(v, bool))}")
    return entry
