"""The ECP5 primitives the generated Verilog instantiates, and a simulation model for each.

The generator builds two flavours of the same design from one Amaranth
description, chosen by the ``platform`` handed to ``elaborate``:

- ``platform=None`` (Amaranth's own simulator): plain Amaranth arithmetic.
- ``platform=ECP5`` (the Verilog that cocotb simulates *and* yosys
  synthesises): each PE's multiplier is a ``MULT18X18D`` with its output
  register switched on, because yosys 0.23 maps a multiply to the DSP's
  combinational path only and leaves the product register in the fabric.
  That path (route into the DSP, 3.9 ns through it, route out) cost
  10.5-11.6 ns, so the design closed at 86-95 MHz. The operand registers
  stay in the fabric: they have clock enables (the weight loads once per
  fold, the activation is held while the weight is zero), and a DSP's
  clock-enable pins are reached through slow routing (6.7 ns measured),
  while its data pins are not.

A part with fewer multipliers than the array has PEs (the LFE5U-25F's 28
for an 8x8 array) gets as many ``MULT18X18D`` as it has; the remaining PEs
multiply in the fabric (LUTs and carry chains), registered the same way, so
the design is the same cycle for cycle; :func:`multipliers` says how they
split, and synthesis of such a design runs ``synth_ecp5 -nodsp`` so yosys
does not map those fabric multiplies onto DSPs the part lacks.

Verilator and Icarus have no model of a vendor primitive, so
:func:`sim_models` writes one: the subset of ``MULT18X18D`` this design
uses (18x18 multiply, signed per ``SIGNEDA``/``SIGNEDB``, optional input
and output registers on ``CLK0`` with a selectable clock enable and a
synchronous reset). A parameter outside that subset stops the simulation
with ``$fatal`` rather than being simulated wrongly. The semantics follow
Lattice's sysDSP usage guide (TN1267): a register samples its input on the
rising edge of its clock when its clock enable is high, and clears on its
reset with ``RESETMODE="SYNC"``.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["ECP5", "ECP5Primitives", "MODELS_FILE", "inline_multipliers", "multipliers", "mult18x18d_ports", "registered_multiply", "sim_models", "write_sim_models"]

#: The file, next to the top's Verilog, holding the simulation models of the primitives it instantiates.
MODELS_FILE = "ecp5_models.v"


class ECP5Primitives:
    """What a ``platform`` offers the accelerator's gateware on an ECP5 part: its multiplier primitive. Mixed into
    every ECP5 platform (the out-of-context :class:`ECP5`, the ULX3S board's), so the PEs ask for it once.
    ``dsps_left``: the multipliers not yet taken (None: more than any design asks for)."""

    dsps_left: int | None = None
    #: The width of the multiplier's operand ports. A PE given a ``MULT18X18D`` keeps its operand registers this
    #: wide, sign-extended where they are written, and the array carries activations along its rows at this width
    #: (sign-extended once, where a row starts): the primitive's ports then read whole registers. The copies of a
    #: sign bit are the same flip-flop to synthesis (yosys merges them), but a simulator would otherwise rebuild
    #: both 18-bit operands from their sign bits in every PE on every cycle (about a sixth of Verilator's time).
    multiplier_operand_bits = 18

    def take_multiplier(self) -> bool:
        """Take one of the part's multipliers for a PE: False once they are all taken (the PE then multiplies
        in the fabric)."""
        if self.dsps_left is not None:
            if self.dsps_left == 0:
                return False
            self.dsps_left -= 1
        return True

    def registered_multiply(self, m, a, b, product) -> None:
        """Add to ``m`` the ``MULT18X18D`` a PE took (:meth:`take_multiplier`), computing ``product = a * b`` (both
        signed, at most 18 bits) one cycle later, in the primitive's own output register (see the module
        docstring)."""
        registered_multiply(m, a, b, product)


class ECP5(ECP5Primitives):
    """The ``platform`` passed to ``elaborate`` for the FPGA flavour: instantiate ECP5 primitives.

    Only a marker with the primitives: the design is synthesised out of context, without pins, so nothing of
    Amaranth's build system is needed. ``device`` names the part (:mod:`prunehw.hw.target.devices`), whose
    multiplier count bounds the PEs given a ``MULT18X18D``. One instance per elaboration (it counts them).
    """

    def __init__(self, device: str = "LFE5U-85F"):
        from prunehw.hw.target.devices import device as _device

        self.device = device
        self.dsps_left = _device(device).dsps


def multipliers(pes: int, device: str) -> dict[str, int]:
    """How the ``pes`` multipliers of an array split on ``device``: ``dsp`` (``MULT18X18D``) and ``lut`` (fabric),
    as :class:`ECP5` hands them out."""
    from prunehw.hw.target.devices import device as _device

    dsp = min(pes, _device(device).dsps)
    return {"dsp": dsp, "lut": pes - dsp}


def registered_multiply(m, a, b, product) -> None:
    """``product`` (registered) = ``a`` x ``b`` on a ``MULT18X18D`` added to ``m`` as submodule ``dsp``."""
    from amaranth import ClockSignal, Instance, ResetSignal, Signal, signed

    if max(len(a), len(b)) > 18:
        raise ValueError(f"operands of {len(a)} and {len(b)} bits do not fit an 18x18 MULT18X18D")
    # only the product bits the PE keeps are connected (the primitive's higher ones are left open: in Icarus each
    # connected bit is a net of its own, updated whenever the product changes)
    a18, b18, p = Signal(signed(18)), Signal(signed(18)), Signal(signed(min(36, len(product))), name="p")
    m.d.comb += [a18.eq(a), b18.eq(b), product.eq(p)]
    m.submodules.dsp = Instance("MULT18X18D", **mult18x18d_ports(a18, b18, p, clk=ClockSignal(), rst=ResetSignal()))


def mult18x18d_ports(a, b, p, *, clk, rst) -> dict:
    """Instance keyword arguments wiring ``a`` (18 bits) x ``b`` (18 bits) -> ``p`` (its low ``len(p)`` bits, at
    most 36; the primitive's higher product bits left open), both signed: the operands straight into the
    multiplier, the product registered every cycle (CLK0, CE0 tied high)."""
    kw = {"p_REG_INPUTA_CLK": "NONE", "p_REG_INPUTB_CLK": "NONE", "p_REG_PIPELINE_CLK": "NONE",
          "p_REG_OUTPUT_CLK": "CLK0", "p_REG_OUTPUT_CE": "CE0", "p_REG_OUTPUT_RST": "RST0",
          "p_RESETMODE": "SYNC", "p_GSR": "DISABLED",
          "i_SIGNEDA": 1, "i_SIGNEDB": 1, "i_SOURCEA": 0, "i_SOURCEB": 0,
          "i_CLK0": clk, "i_CE0": 1, "i_RST0": rst}
    for i in range(18):
        kw[f"i_A{i}"], kw[f"i_B{i}"], kw[f"i_C{i}"] = a[i], b[i], 0
    if len(p) > 36:
        raise ValueError(f"a product of {len(p)} bits does not fit a MULT18X18D's 36")
    for i in range(len(p)):
        kw[f"o_P{i}"] = p[i]
    return kw


def _selects() -> str:
    """localparams giving the index of the clock enable and reset each register uses ("CE2" -> 2)."""
    lines = []
    for short, reg in (("A", "INPUTA"), ("B", "INPUTB"), ("P", "OUTPUT")):
        for kind in ("CE", "RST"):
            pick = " : ".join(f'(REG_{reg}_{kind} == "{kind}{i}") ? {i}' for i in range(3)) + " : 3"
            lines.append(f"    localparam {short}_{kind} = {pick};")
    return "\n".join(lines)


def _bits(name: str, n: int) -> str:
    return ", ".join(f"{name}{i}" for i in reversed(range(n)))


def sim_models() -> str:
    """Verilog simulation models of the primitives the ECP5 flavour instantiates (see the module docstring)."""
    regs = ("INPUTA", "INPUTB", "PIPELINE", "OUTPUT")
    params = "\n".join(f'    parameter REG_{r}_CLK = "NONE";\n    parameter REG_{r}_CE = "CE0";\n'
                       f'    parameter REG_{r}_RST = "RST0";' for r in regs)
    return f"""// Simulation model of the subset of Lattice ECP5 MULT18X18D that prunehw instantiates
// (written by prunehw.hw.target.ecp5; yosys maps the instance to the real primitive).
module MULT18X18D (
    input {_bits("A", 18)},
    input {_bits("B", 18)},
    input {_bits("C", 18)},
    input SIGNEDA, SIGNEDB, SOURCEA, SOURCEB,
    input CLK0, CLK1, CLK2, CLK3, CE0, CE1, CE2, CE3, RST0, RST1, RST2, RST3,
    output {_bits("P", 36)}
);
{params}
    parameter RESETMODE = "SYNC";
    parameter GSR = "ENABLED";
    parameter MULT_BYPASS = "DISABLED";
    parameter CAS_MATCH_REG = "FALSE";
    parameter CLK0_DIV = "ENABLED";
    parameter CLK1_DIV = "ENABLED";
    parameter CLK2_DIV = "ENABLED";
    parameter CLK3_DIV = "ENABLED";
    parameter HIGHSPEED_CLK = "NONE";
    parameter SOURCEB_MODE = "B_SHIFT";

    initial begin
        if (REG_INPUTA_CLK != "NONE" && REG_INPUTA_CLK != "CLK0") $fatal(1, "MULT18X18D model: REG_INPUTA_CLK must be NONE or CLK0");
        if (REG_INPUTB_CLK != "NONE" && REG_INPUTB_CLK != "CLK0") $fatal(1, "MULT18X18D model: REG_INPUTB_CLK must be NONE or CLK0");
        if (REG_OUTPUT_CLK != "NONE" && REG_OUTPUT_CLK != "CLK0") $fatal(1, "MULT18X18D model: REG_OUTPUT_CLK must be NONE or CLK0");
        if (REG_PIPELINE_CLK != "NONE") $fatal(1, "MULT18X18D model: REG_PIPELINE_CLK must be NONE");
        if (RESETMODE != "SYNC") $fatal(1, "MULT18X18D model: RESETMODE must be SYNC");
        if (MULT_BYPASS != "DISABLED") $fatal(1, "MULT18X18D model: MULT_BYPASS must be DISABLED");
    end

    wire [17:0] a = {{{_bits("A", 18)}}};
    wire [17:0] b = {{{_bits("B", 18)}}};
    wire [3:0] ce = {{CE3, CE2, CE1, CE0}};
    wire [3:0] rst = {{RST3, RST2, RST1, RST0}};
{_selects()}

    // the input registers, built only where used (a process woken every cycle costs time in simulation)
    reg [17:0] a_q = 18'd0, b_q = 18'd0;
    reg sa_q = 1'b0, sb_q = 1'b0;
    generate
        if (REG_INPUTA_CLK != "NONE")
            always @(posedge CLK0)
                if (rst[A_RST]) begin a_q <= 18'd0; sa_q <= 1'b0; end
                else if (ce[A_CE]) begin a_q <= a; sa_q <= SIGNEDA; end
        if (REG_INPUTB_CLK != "NONE")
            always @(posedge CLK0)
                if (rst[B_RST]) begin b_q <= 18'd0; sb_q <= 1'b0; end
                else if (ce[B_CE]) begin b_q <= b; sb_q <= SIGNEDB; end
    endgenerate
    wire [17:0] a_m = (REG_INPUTA_CLK == "NONE") ? a : a_q;
    wire [17:0] b_m = (REG_INPUTB_CLK == "NONE") ? b : b_q;
    wire sa_m = (REG_INPUTA_CLK == "NONE") ? SIGNEDA : sa_q;
    wire sb_m = (REG_INPUTB_CLK == "NONE") ? SIGNEDB : sb_q;
    wire signed [18:0] a_x = {{sa_m & a_m[17], a_m}};
    wire signed [18:0] b_x = {{sb_m & b_m[17], b_m}};

    // the product: continuous without the output register; with it, computed at the clock edge only (not again
    // for every operand bit that changes between edges). The low 36 bits of a product do not depend on the
    // bits above them, so a 36-bit signed multiply gives them.
    reg [35:0] p_q = 36'd0;
    generate
        if (REG_OUTPUT_CLK == "NONE") begin : comb
            wire signed [37:0] prod = a_x * b_x;
            assign {{{_bits("P", 36)}}} = prod[35:0];
        end else begin : registered
            always @(posedge CLK0)
                if (rst[P_RST]) p_q <= 36'd0;
                else if (ce[P_CE]) p_q <= a_x * b_x;
            assign {{{_bits("P", 36)}}} = p_q;
        end
    endgenerate
endmodule
"""


def write_sim_models(out_dir: Path) -> Path:
    from prunehw.core.artifacts import write_bytes

    return write_bytes(Path(out_dir) / MODELS_FILE, sim_models().encode())


_INSTANCE = re.compile(r"^(?:  \(\*[^\n]*\*\)\n)*  MULT18X18D #\(\n(?P<params>.*?)\n  \) (?P<name>\S+) +\(\n(?P<ports>.*?)\n  \);\n",
                       re.S | re.M)
_PARAM = re.compile(r'\.(\w+)\("([^"]*)"\)')
_PORT = re.compile(r"^    \.(\w+)\((.*)\),?$", re.M)
_BIT = re.compile(r"^(.*?) ?\[(\d+)\]$")
#: The configuration :func:`mult18x18d_ports` builds, the one :func:`inline_multipliers` writes out
_INLINED = {"REG_INPUTA_CLK": "NONE", "REG_INPUTB_CLK": "NONE", "REG_PIPELINE_CLK": "NONE",
            "REG_OUTPUT_CLK": "CLK0", "REG_OUTPUT_CE": "CE0", "REG_OUTPUT_RST": "RST0", "RESETMODE": "SYNC"}


def inline_multipliers(verilog: str) -> tuple[str, int]:
    """``verilog`` with each ``MULT18X18D`` that has the configuration the PEs build (operands straight in, the
    product registered on ``CLK0`` with ``CE0`` and a synchronous ``RST0``) replaced by what the simulation model
    computes for that configuration, written as one register: ``if (RST0) p <= 0; else if (CE0) p <= A x B``, the
    operands sign-extended per ``SIGNEDA``/``SIGNEDB`` exactly as the model does; and the number replaced.

    For Icarus only (Verilator runs the instances on the model, as fast either way): an instance's 18 + 18 + 17
    single-bit ports are each a net, and the product's bits, driven port by port, make Icarus resolve the product's
    vector bit by bit (with strengths) whenever it changes. Operands and product written as vectors cost it none of
    that: on the default dense design a third less time (5.85 -> 3.86 s for one image). An instance in any other
    configuration is left to the model."""
    count = 0

    def vector(ports: dict, pin: str, n: int) -> str:
        """The expression for pins ``pin0 .. pin{n-1}``: one vector's low bits where they are, else their concat."""
        bits = [ports[f"{pin}{i}"] for i in range(n)]
        whole = [_BIT.match(b) for b in bits]
        if all(whole) and len({w.group(1) for w in whole}) == 1 and [int(w.group(2)) for w in whole] == list(range(n)):
            return f"{whole[0].group(1)} [{n - 1}:0]"
        return "{ " + ", ".join(reversed(bits)) + " }"

    def signed(ports: dict, pin: str) -> str:
        """Operand ``pin`` as the model extends it: 19 bits, the sign bit its top one where ``SIGNED{pin}``."""
        return f"$signed({{ {ports[f'SIGNED{pin}']} & {ports[f'{pin}17']}, {vector(ports, pin, 18)} }})"

    def replace(m: re.Match) -> str:
        nonlocal count
        params = dict(_PARAM.findall(m.group("params")))
        ports = dict(_PORT.findall(m.group("ports")))
        n = 0
        while f"P{n}" in ports:
            n += 1
        if (any(params.get(k, "NONE" if k.endswith("_CLK") else "") != v for k, v in _INLINED.items())
                or n == 0 or any(f"P{i}" in ports for i in range(n, 36))
                or any(f"{pin}{i}" not in ports for pin in "AB" for i in range(18))
                or any(k not in ports for k in ("CLK0", "CE0", "RST0", "SIGNEDA", "SIGNEDB"))):
            return m.group(0)
        count += 1
        reg = f"_mult18x18d_{count}_p"
        return (f"  // {m.group('name')}: MULT18X18D, as its simulation model computes it\n"
                f"  reg [35:0] {reg} = 36'd0;\n"
                f"  always @(posedge {ports['CLK0']})\n"
                f"    if ({ports['RST0']}) {reg} <= 36'd0;\n"
                f"    else if ({ports['CE0']}) {reg} <= {signed(ports, 'A')} * {signed(ports, 'B')};\n"
                f"  assign {vector(ports, 'P', n)} = {reg}[{n - 1}:0];\n")

    return _INSTANCE.sub(replace, verilog), count
