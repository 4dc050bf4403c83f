"""The flow's Verilog emitter: the registers of a clock in one clocked block, memories' write ports as they were."""

import re
import shutil
import subprocess

import pytest
from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from prunehw.hw.compile.verilog import VERILOG_PASSES, one_clocked_process, to_verilog


class _Regs(wiring.Component):
    """Two registers with a reset, one with an enable, one without a reset, and a memory written and read."""

    def __init__(self):
        super().__init__({"d": In(8), "en": In(1), "addr": In(2), "a": Out(8), "b": Out(8), "c": Out(8),
                          "q": Out(8)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=8, depth=4, init=[])
        wr, rd = mem.write_port(), mem.read_port()
        keep = Signal(8, reset_less=True)
        m.d.sync += [self.a.eq(self.d + 1), keep.eq(self.d ^ 0x5A)]
        with m.If(self.en):
            m.d.sync += self.b.eq(self.a)
        m.d.comb += [self.c.eq(keep), wr.addr.eq(self.addr), wr.data.eq(self.d), wr.en.eq(self.en),
                     rd.addr.eq(self.addr), self.q.eq(rd.data)]
        return m


def _blocks(text: str) -> list[str]:
    return re.findall(r"^  always @\(posedge clk\).*?(?=^  (?:always|assign|reg|wire|end\b|initial)|^endmodule)",
                      text, re.S | re.M)


def test_registers_share_one_clocked_block_and_a_memory_keeps_its_write_port():
    text = to_verilog(_Regs(), "regs", None)
    blocks = _blocks(text)
    writes = [b for b in blocks if re.search(r"\bmem\s*\[[^\]]*\]\s*<=", b)]
    assert len(writes) == 1, text                      # the memory's write port: a block of its own
    regs = [b for b in blocks if b not in writes]
    assert len(regs) == 1, text                        # every register of the clock in one
    body = regs[0]
    # the resets under one condition, then each register's own update
    assert body.count("if (rst) begin") == 1 and "end else begin" in body, body
    for reg in ("a", "b"):
        assert re.search(rf"\b{reg} <= 8'h00;", body), (reg, body)
    assert re.search(r"if \(en\) b <= a;", body), body


def test_a_block_it_does_not_know_or_with_attributes_is_left_as_it_was():
    text = "\n".join(["module t(clk, x, y, z);", "  always @(posedge clk)", "", "  always @(negedge clk)",
                      "    y <= x;", '  (* keep = 1 *)', "  always @(posedge clk)", "    z <= x;", "endmodule", ""])
    assert one_clocked_process(text) == text


def test_merged_design_simulates_as_yosys_wrote_it(tmp_path):
    """Icarus runs yosys's Verilog as written and as merged side by side on the same stimulus: equal outputs every
    cycle."""
    if shutil.which("iverilog") is None:
        pytest.skip("Icarus Verilog is not installed (apt-get install iverilog)")
    from amaranth._toolchain.yosys import find_yosys
    from amaranth.back import rtlil

    raw = find_yosys(lambda ver: ver >= (0, 40)).run(
        ["-q", "-"], "\n".join([f"read_rtlil <<rtlil\n{rtlil.convert(_Regs(), name='regs', emit_src=False)}\nrtlil",
                                *VERILOG_PASSES, "write_verilog"]), ignore_warnings=True)
    merged = one_clocked_process(raw)
    assert merged != raw
    (tmp_path / "raw.v").write_text(raw)
    (tmp_path / "merged.v").write_text(merged.replace("module regs(", "module regs_merged("))
    (tmp_path / "tb.v").write_text("""
module tb;
  reg clk = 0, rst = 1, en = 0; reg [7:0] d = 0; reg [1:0] addr = 0;
  wire [7:0] a0, b0, c0, q0, a1, b1, c1, q1;
  regs r0(.clk(clk), .rst(rst), .d(d), .en(en), .addr(addr), .a(a0), .b(b0), .c(c0), .q(q0));
  regs_merged r1(.clk(clk), .rst(rst), .d(d), .en(en), .addr(addr), .a(a1), .b(b1), .c(c1), .q(q1));
  integer i, bad = 0;
  initial begin
    for (i = 0; i < 200; i = i + 1) begin
      #1 clk = 1; #1 clk = 0;
      rst = (i % 37) < 2; en = $random; d = $random; addr = $random;
      if ({a0, b0, c0, q0} !== {a1, b1, c1, q1}) bad = bad + 1;
    end
    $display("bad %0d", bad); $finish;
  end
endmodule
""")
    subprocess.run(["iverilog", "-o", str(tmp_path / "sim"), str(tmp_path / "tb.v"), str(tmp_path / "raw.v"),
                    str(tmp_path / "merged.v")], check=True, capture_output=True)
    out = subprocess.run(["vvp", "-n", str(tmp_path / "sim")], check=True, capture_output=True, text=True).stdout
    assert "bad 0" in out, out
