"""Array shapes other than the default 8x8 through the generated Verilog (Verilator; 4x4 also Icarus): bit-exact logits,
every counter equal to the analytic model (the Amaranth-simulator side is ``tests/hw/test_accelerator.py``)."""

import numpy as np
import pytest
from cli_helpers import need_tool

from prunehw.core.config import ArrayConfig, LayerSpec as L, NetworkConfig
from prunehw.export.contract import load_contract, save_contract
from prunehw.hw.gateware.accelerator import COUNTERS
from prunehw.hw.models.cycle_model import activity_model
from prunehw.hw.generate import generate_verilog, program_for
from prunehw.export.golden import golden
from prunehw.model.network import build_model
from prunehw.export.quantize import quantize
from prunehw.sim.runner import run_rtl, simulator_missing

NET = NetworkConfig(layers=(L(type="conv2d", filters=3, kernel=3), L(type="relu"), L(type="maxpool2d", pool=2),
                            L(type="conv2d", filters=5, kernel=3), L(type="relu"), L(type="maxpool2d", pool=3),
                            L(type="flatten"), L(type="dense", units=7), L(type="relu"), L(type="dense", units=10)))


@pytest.fixture(scope="module")
def contract(tmp_path_factory, tiny_data):
    spec, w, b = quantize(build_model(NET, (28, 28, 1), 10, seed=8), tiny_data.x_train[:64])
    path = tmp_path_factory.mktemp("arrays") / "contract.json"
    save_contract(path, spec, w, b)
    c = load_contract(path)
    rng = np.random.default_rng(5)
    for name, bias in c.biases.items():   # an untrained model's biases are 0: make them count
        c.biases[name] = rng.integers(-100, 100, bias.shape)
    return c


#: 16x16 takes about 10 minutes here (Verilator compiling 256 PEs): it runs with the regression in .ci/run
@pytest.mark.parametrize("sim, rows, cols", [("verilator", 4, 4), ("icarus", 4, 4), ("verilator", 4, 8),
                                             pytest.param("verilator", 16, 16, marks=pytest.mark.regression)])
def test_array_shapes_in_rtl(contract, tiny_data, tmp_path, sim, rows, cols):
    need_tool(simulator_missing(sim))
    array = ArrayConfig(rows=rows, cols=cols)
    _, _, desc = generate_verilog(contract, array, tmp_path / "rtl")
    images = tiny_data.x_test[:3]
    res = run_rtl(tmp_path / "rtl", desc, images, golden(contract, images), sim, tmp_path / "sim")
    assert (res.match, res.total) == (3, 3), res.first_mismatch
    want = activity_model(program_for(contract, array))
    for counters in res.counters:
        assert dict(zip(COUNTERS, counters)) == want


def test_icarus_reads_the_multipliers_written_out_and_leaves_another_configuration_to_the_model(contract, tiny_data,
                                                                                                 tmp_path):
    """Icarus's copy of the Verilog has each PE's MULT18X18D written out as its model computes it (one register per
    PE, the operands and product as vectors); an instance configured otherwise stays an instance, run on the model;
    both bit-exact on the same images, every counter equal to the model."""
    from prunehw.hw.target.ecp5 import inline_multipliers
    from prunehw.sim.runner import harness_sources

    need_tool(simulator_missing("icarus"))
    array = ArrayConfig(rows=4, cols=4)
    _, _, desc = generate_verilog(contract, array, tmp_path / "rtl")
    text = (tmp_path / "rtl" / "prunehw_top.v").read_text()
    out, n = inline_multipliers(text)
    assert n == 16 and "MULT18X18D #(" not in out and out.count("as its simulation model computes it") == 16
    # one instance given an input register: not the configuration written out, so left to the model
    i = text.index('.REG_INPUTA_CLK("NONE")')
    other = text[:i] + '.REG_INPUTA_CLK("CLK0")' + text[i + len('.REG_INPUTA_CLK("NONE")'):]
    assert inline_multipliers(other)[1] == 15 and inline_multipliers(other)[0].count("MULT18X18D #(") == 1
    sources = harness_sources(tmp_path / "rtl", desc, tiny_data.x_test[:1], tmp_path / "h", "icarus")
    assert sources[1].parent == (tmp_path / "h").resolve()          # (Icarus's own copy, beside its harness)
    images = tiny_data.x_test[:2]
    res = run_rtl(tmp_path / "rtl", desc, images, golden(contract, images), "icarus", tmp_path / "sim")
    assert (res.match, res.total) == (2, 2), res.first_mismatch
    assert all(dict(zip(COUNTERS, c)) == activity_model(program_for(contract, array)) for c in res.counters)


def test_mixed_weight_widths_and_narrow_activations_in_rtl(tiny_data, tmp_path):
    """Per-layer weight widths (one weight ROM per width in the Verilog) and 4-bit activation buffers: Verilator
    bit-exact, every counter (the weight bits read among them) equal to the analytic model."""
    need_tool(simulator_missing("verilator"))
    model = build_model(NET, (28, 28, 1), 10, seed=8)
    names = [l.name for l in model.layers if l.name.startswith(("conv", "dense"))]
    spec, w, b = quantize(model, tiny_data.x_train[:64], dict(zip(names, (6, 3, 4, 5))), 4)
    save_contract(tmp_path / "contract.json", spec, w, b)
    contract = load_contract(tmp_path / "contract.json")
    array = ArrayConfig(rows=4, cols=4)
    _, _, desc = generate_verilog(contract, array, tmp_path / "rtl")
    assert [r["weight_bits"] for r in desc["memories"]["weights"]["roms"]] == [3, 4, 5, 6]
    assert desc["memories"]["activations"]["bits_per_word"] == 4 * 4
    images = tiny_data.x_test[:3]
    res = run_rtl(tmp_path / "rtl", desc, images, golden(contract, images), "verilator", tmp_path / "sim")
    assert (res.match, res.total) == (3, 3), res.first_mismatch
    want = activity_model(program_for(contract, array))
    assert all(dict(zip(COUNTERS, counters)) == want for counters in res.counters)


def test_benchmark_runs_the_design_every_way_bit_exact(contract, tiny_data, tmp_path):
    """``prunehw sim --benchmark``'s runs on a 4x4 design, in the flow's Verilog and in Amaranth's own: cocotb in
    Verilator, the bare C++ loop and cocotb in Icarus each compute the golden logits, over at least the analytic
    cycles of the images they ran (the bare loop's logits are parsed from its output, not trusted)."""
    from prunehw.hw.compile.verilog import EMITTERS
    from prunehw.sim.bench import KINDS, bench_design

    for sim in ("verilator", "icarus"):
        need_tool(simulator_missing(sim))
    array = ArrayConfig(rows=4, cols=4)
    images = tiny_data.x_test[:2]
    expected = golden(contract, images)
    lines = []
    for emitter in EMITTERS:
        _, _, desc = generate_verilog(contract, array, tmp_path / emitter, emitter=emitter)
        rows = bench_design("tiny", emitter, tmp_path / emitter, desc, images, expected, tmp_path / "bench", 2, 1,
                            say=lines.append)
        assert [r.kind for r in rows] == list(KINDS), lines
        for r in rows:
            assert r.match == r.images == (1 if r.kind.startswith("icarus") else 2), (r, lines)
            assert r.cycles >= r.images * desc["cycles_analytic"]["total"] and r.seconds > 0, r
    text = {e: (tmp_path / e / "prunehw_top.v").read_text() for e in EMITTERS}
    # the baseline is Amaranth's own Verilog: next-state logic in always @* blocks, which the flow's has none of
    assert "always @*" in text["amaranth"] and "always @*" not in text["prunehw"]
