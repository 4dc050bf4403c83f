"""Synthesis and place-and-route through the real tools (Debian's yosys, PyPI's nextpnr-ecp5).

The fast test synthesises a tiny network on a 3x1 array and checks the
parsed figures against what the design must contain: one DSP per PE; every
memory the generator declared placed somewhere, the activation buffers in
block RAM, one DP16KD per block-RAM memory (each small enough to need one),
and 16x4 LUT RAM cells exactly covering the memories put in LUT RAM; the regression synthesises the quick flow's dense variant on the
default 8x8 array, requires it to fit with one DSP per PE, and its rerun to be cached. A
missing tool is a skip with its reason, and a failure under ``CI=true``.
"""

import json

import numpy as np
import pytest
from cli_helpers import need_tool

from prunehw.core.config import ArrayConfig, LayerSpec as L, NetworkConfig
from prunehw.export.contract import load_contract, save_contract
from prunehw.hw.generate import TOP_NAME, generate_verilog
from prunehw.hw.target.synth import no_fit_problem, parse_report, run_synthesis, tools_missing
from prunehw.model.network import build_model
from prunehw.export.quantize import quantize

TINY = NetworkConfig(layers=(L(type="conv2d", filters=2, kernel=3), L(type="relu"), L(type="maxpool2d", pool=2),
                             L(type="flatten"), L(type="dense", units=3)))
#: DP16KD's widest aspect ratios (bits x words): a memory within either needs exactly one block.
ONE_BLOCK = ((36, 512), (18, 1024))


@pytest.fixture(scope="module")
def tiny_synth(tmp_path_factory):
    need_tool(tools_missing())
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, size=(32, 16, 16, 1)).astype(np.uint8)
    model = build_model(TINY, (16, 16, 1), 3, seed=5)
    spec, w, b = quantize(model, x)
    folder = tmp_path_factory.mktemp("synth")
    save_contract(folder / "contract.json", spec, w, b)
    array = ArrayConfig(rows=3, cols=1)
    verilog, _, desc = generate_verilog(load_contract(folder / "contract.json"), array, folder / "rtl")
    res = run_synthesis(verilog, TOP_NAME, folder / "synth", target_mhz=100.0)
    return res, desc, array, folder / "synth"


def test_tiny_design_resources_match_its_structure(tiny_synth):
    res, desc, array, _ = tiny_synth
    shapes = desc["memory_shapes"]
    assert res.fits
    # one multiplier per PE, and no other multiplier anywhere (the MAC counter adds, it does not multiply)
    assert res.dsp == array.rows * array.cols
    # every memory yosys placed is one the generator declared (or the op-constant ROM), and every
    # RAM is there (a small ROM may have been folded into logic before memory mapping)
    assert set(res.memories) - {"ctrl.oprom"} <= set(shapes)
    assert {n for n in shapes if n.startswith(("act", "img", "writeback.psum"))} <= set(res.memories)
    # (block RAM, or LUT RAM for a bank small enough that yosys finds it cheaper; never flip-flops)
    assert {res.memories[n] for n in shapes if n.startswith(("act", "img"))} <= {"DP16KD", "PDPW16KD", "DPR16X4"}
    in_ebr = [n for n, prim in res.memories.items() if prim in ("DP16KD", "PDPW16KD")]
    for name in in_ebr:
        bits, words = shapes[name]["bits"], shapes[name]["words"]
        assert any(bits <= w and words <= d for w, d in ONE_BLOCK), (name, bits, words)
    assert res.bram == len(in_ebr)
    in_lutram = [shapes[n] for n, prim in res.memories.items() if prim == "DPR16X4"]
    # every 16x4 LUT RAM cell belongs to a declared memory (yosys may drop a 4-bit slice it proves unused or constant,
    # so the declared shapes are an upper bound, reached by all but at most one slice pair per memory)
    need = sum(-(-s["words"] // 16) * -(-s["bits"] // 4) for s in in_lutram)
    got = res.cells.get("TRELLIS_DPR16X4", 0)
    assert need - 2 * len(in_lutram) <= got <= need, (got, need)
    assert res.lut > 0 and res.ff > 0
    assert res.cells.get("DP16KD", 0) == res.bram and res.cells["MULT18X18D"] == res.dsp


def test_tiny_design_routes_and_reports_its_clock(tiny_synth):
    res, _, _, folder = tiny_synth
    report = json.loads((folder / "report.json").read_text())
    assert res.fmax_mhz == pytest.approx(report["fmax"][next(iter(report["fmax"]))]["achieved"], abs=0.01)
    assert res.meets_timing == (res.fmax_mhz >= 100.0)
    assert res.capacity == {"lut": 83640, "ff": 83640, "carry": 41820, "dsp": 156, "bram": 208}
    assert res.critical_path["delay_ns"] == pytest.approx(1000.0 / res.fmax_mhz, rel=0.02)
    saved = json.loads((folder / "synth.json").read_text())
    assert saved["lut"] == res.lut and saved["fmax_mhz"] == res.fmax_mhz
    for log in ("yosys.log", "nextpnr.log"):
        assert (folder / log).stat().st_size > 0


def test_the_same_design_places_on_the_part_chosen(tiny_synth):
    """``device`` reaches place and route: the netlist synthesised for the 85F placed on the LFE5U-25F (yosys not
    run again: synthesis is the same for every part of a family), whose capacity nextpnr reports."""
    res85, _, _, folder = tiny_synth
    res = run_synthesis(folder.parent / "rtl" / f"{TOP_NAME}.v", TOP_NAME, folder.parent / "synth_25f",
                        target_mhz=100.0, device="LFE5U-25F", netlist_from=folder)
    assert res.fits and res.device == "LFE5U-25F" and not (folder.parent / "synth_25f" / "yosys.log").exists()
    assert res.cells == res85.cells and res.memories == res85.memories and res.seconds["nextpnr"] > 0 and "yosys" not in res.seconds
    with pytest.raises(ValueError, match="holds no synthesised netlist"):
        run_synthesis(folder.parent / "rtl" / f"{TOP_NAME}.v", TOP_NAME, folder.parent / "synth_x",
                      device="LFE5U-25F", netlist_from=folder.parent / "rtl")
    assert res.capacity == {"lut": 24288, "ff": 24288, "carry": 12144, "dsp": 28, "bram": 56}
    assert (res.lut, res.ff, res.dsp, res.bram) == (res85.lut, res85.ff, res85.dsp, res85.bram)


def test_report_parser_picks_the_slowest_clock_and_its_path():
    step = lambda kind, a, b, d: {"type": kind, "from": {"cell": a, "port": "Q"}, "to": {"cell": b, "port": "D"}, "delay": d}
    report = {"fmax": {"clk": {"achieved": 120.0, "constraint": 100}, "clk2": {"achieved": 80.0, "constraint": 100}},
              "utilization": {"MULT18X18D": {"available": 156, "used": 3}, "TRELLIS_COMB": {"available": 10, "used": 1}},
              "critical_paths": [{"from": "clk", "to": "clk", "path": [step("clk-to-q", "a", "a", 1.0), step("logic", "a", "b", 7.0)]},
                                 {"from": "clk2", "to": "clk2", "path": [step("clk-to-q", "c", "c", 2.0), step("logic", "c", "d", 10.5)]}]}
    fmax, capacity, path = parse_report(report)
    assert fmax == 80.0
    assert capacity == {"lut": 10, "carry": 5, "dsp": 156}
    assert path == {"from": "c", "to": "d", "delay_ns": 12.5, "logic_levels": 1}


@pytest.mark.parametrize("line, problem", [
    ("ERROR: Unable to place cell 'pe_3_4.mul', no BELs remaining to implement cell type 'MULT18X18D'",
     "does not fit the LFE5U-85F: no MULT18X18D left"),
    ("ERROR: Unable to find legal placement for all cells, design is probably at utilisation limit.",
     "does not fit the LFE5U-85F: no legal placement, the design is at the utilisation limit"),
    ("ERROR: Max frequency for clock 'clk': 36.29 MHz (FAIL at 100.00 MHz)", None),
])
def test_a_design_that_does_not_fit_is_named_in_one_line(line, problem):
    assert no_fit_problem(f"Info: placing\n{line}\n") == problem


@pytest.mark.regression
def test_dense_variant_synthesises_routes_and_is_cached(quick_flow):
    """The largest default design (dense, 8x8) through yosys and nextpnr on the 85F; a second run is cached.

    The clock it reaches is measured and reported (it closes 100 MHz today; a missed target must come back as
    ``meets_timing`` false with the critical path named, not as a failure).
    """
    from prunehw.synth_report import synth_variants

    need_tool(tools_missing())
    entry = synth_variants(quick_flow, ["dense"])["dense"]
    assert entry["fits"], entry.get("problem")
    assert entry["dsp"] == quick_flow.cfg.array.rows * quick_flow.cfg.array.cols
    assert entry["fmax_mhz"] > 0 and entry["meets_timing"] == (entry["fmax_mhz"] >= entry["target_mhz"])
    if not entry["meets_timing"]:
        cp = entry["critical_path"]
        assert f"critical path {cp['from']} -> {cp['to']}" in entry["problem"]
    assert entry["images_per_s"] == pytest.approx(entry["fmax_mhz"] * 1e6 / entry["cycles_per_image"], rel=1e-3)
    out = quick_flow.run_dir / "dense" / "synth" / "synth.json"
    stamp = out.stat().st_mtime_ns
    lines = []
    log, quick_flow.log = quick_flow.log, lines.append
    try:
        assert synth_variants(quick_flow, ["dense"])["dense"] == entry
    finally:
        quick_flow.log = log
    assert out.stat().st_mtime_ns == stamp and any("up to date" in line for line in lines)
