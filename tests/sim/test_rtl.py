"""The generated Verilog under cocotb in Verilator and Icarus: bit-exact logits, counters equal to the model.

Fast runs (a few images per simulator and variant) are part of ``make test``;
the full regression (all 10,000 test images in Verilator, the first
:data:`ICARUS_IMAGES` per variant in Icarus, which runs about 500 times
slower) is marked ``regression`` and run by ``.ci/run``. A simulator that is
not installed is a skip with its reason, never a pass.
"""

import pytest
from cli_helpers import need_tool

from prunehw.sim.runner import simulator_missing

VARIANTS = ["dense", "unstructured-0.90", "matrix-0.80"]
#: Icarus images per variant in the regression (about 40 x 11,600 cycles for each of the dense designs, at about
#: 1,500 cycles per second since the emitter flattens the design and trims the multipliers' ports)
ICARUS_IMAGES = 40


def _need(sim):
    need_tool(simulator_missing(sim))


def _check(flow, results, n):
    from prunehw.core.artifacts import read_json

    summary = read_json(flow.run_dir / "summary.json")["variants"]
    for v in VARIANTS:
        r = results[v]
        assert r["total"] == n and r["match"] == n, f"{v}: {r['match']}/{r['total']} bit-exact, first mismatch {r['first_mismatch']}"
        assert summary[v]["cycles"]["rtl_equals_analytic"], summary[v]["cycles"]
        assert summary[v]["activity_equals_analytic"], summary[v]["activity"]
        if n >= 3:
            # the testbench loads each image from the third on while the one before runs: the next start then
            # waits only for the inference and the read-out, not for the 784-pixel load as well
            iv, cyc = summary[v]["cycles"]["interval"], summary[v]["cycles"]["rtl"]
            assert cyc < iv["overlapped"] < iv["serial"] and iv["serial"] - iv["overlapped"] >= 28 * 28, iv


@pytest.mark.parametrize("sim, n", [("verilator", 8), ("icarus", 1)])
def test_rtl_bit_exact_few_images(quick_flow, sim, n):
    _need(sim)
    _check(quick_flow, quick_flow.sim(VARIANTS, sim, n, workers=2), n)
    # run again: every variant is up to date, and says so once
    from prunehw.flow import Flow

    lines = []
    Flow(quick_flow.cfg, log=lines.append).sim(VARIANTS, sim, n, workers=2)
    for v in VARIANTS:
        said = [line for line in lines if line.startswith(f"sim {sim} {v}:")]
        assert len(said) == 1 and said[0].startswith(f"sim {sim} {v}: up to date, {n}/{n} images"), lines


def test_a_part_short_of_multipliers_gets_fabric_multipliers_and_the_same_results(quick_flow, tmp_path):
    """On the LFE5U-25F (28 MULT18X18D) the 8x8 array's other 36 PEs multiply in the fabric: that Verilog has 28
    multiplier primitives, says so in its description, and computes the same logits and counters in Verilator."""
    import re

    from prunehw.core.artifacts import read_json
    from prunehw.stages.sim import check_verilog
    from prunehw.synth_report import _part_verilog

    _need("verilator")
    # (where the synthesis stage builds it: a stage's outputs lie in the run folder)
    rtl_dir = _part_verilog(quick_flow, "matrix-0.80", "LFE5U-25F",
                            quick_flow.layout.synth("matrix-0.80") / "LFE5U-25F" / "rtl")
    text = (rtl_dir / "prunehw_top.v").read_text()
    assert len(re.findall(r"^\s*MULT18X18D\b", text, re.M)) == 28
    assert len(re.findall(r"^\s*MULT18X18D\b", (quick_flow.rtl("matrix-0.80") / "prunehw_top.v").read_text(), re.M)) == 64
    assert read_json(rtl_dir / "accelerator.json")["multipliers"] == {"dsp": 28, "lut": 36, "device": "LFE5U-25F"}
    assert "multipliers" not in read_json(quick_flow.layout.accelerator("matrix-0.80"))
    check = check_verilog(quick_flow, "matrix-0.80", rtl_dir, 6, tmp_path / "sim")
    assert check == {"simulator": "verilator", "match": 6, "total": 6, "counters_equal": True, "first_mismatch": None}


def test_the_ice40_flavour_computes_the_same_results_with_its_buffers_in_single_port_ram(quick_flow, tmp_path):
    """The iCE40 UltraPlus's Verilog (activation buffers and image slots in single-port RAM, no multiplier
    primitive) of the quick matrix variant, on a 2x2 array (its 8-bit weights fit the UP5K on none: this is the
    flavour's arithmetic and timing, not a fit), bit-exact in Verilator with every counter equal to the model,
    the testbench loading each next image into one slot while the other is computed."""
    from prunehw.core.artifacts import write_json
    from prunehw.core.config import ArrayConfig
    from prunehw.export.contract import load_contract
    from prunehw.hw.gateware.accelerator import Accelerator
    from prunehw.hw.generate import describe, program_for, write_verilog
    from prunehw.stages.sim import check_verilog

    _need("verilator")
    program = program_for(load_contract(quick_flow.quantize("matrix-0.80")), ArrayConfig(rows=2, cols=2))
    top = Accelerator(program=program)
    rtl_dir = quick_flow.layout.synth("matrix-0.80") / "ice40-2x2" / "rtl"
    text = write_verilog(top, rtl_dir, device="iCE40UP5K").read_text()
    copies = program.copies          # (each copy of each ping-pong buffer, and of each of the image's two slots)
    assert text.count('ram_style = "huge"') == copies[0] + copies[1] + 2 * copies[2] and "MULT18X18D" not in text
    write_json(rtl_dir / "accelerator.json", {**describe(program, top), "sim_models": []})
    check = check_verilog(quick_flow, "matrix-0.80", rtl_dir, 5, tmp_path / "sim")
    assert check == {"simulator": "verilator", "match": 5, "total": 5, "counters_equal": True, "first_mismatch": None}


def test_the_run_device_may_be_the_up5k_and_a_variant_it_cannot_hold_is_refused(quick_flow):
    """``[synth] device = "iCE40UP5K"``: the rtl stage builds the run's Verilog for it, on the largest array it
    holds; the quick variants' 8-bit weights fit it on none, so each is refused in one line naming what it lacks."""
    from prunehw.core.errors import ConfigError
    from prunehw.flow import Flow

    cfg = quick_flow.cfg.replace(synth=quick_flow.cfg.synth.replace(device="iCE40UP5K"))
    with pytest.raises(ConfigError) as err:
        Flow(cfg).rtl("matrix-0.80")
    assert "\n" not in str(err.value)
    assert str(err.value).startswith("does not fit the iCE40UP5K on a 1x1 array: block RAM: needs ")


def test_missing_simulator_is_reported_not_passed(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert "Icarus Verilog is not installed" in simulator_missing("icarus")
    assert "unknown simulator 'ghdl'" in simulator_missing("ghdl")


@pytest.mark.parametrize("ci", ["", "true"])
def test_cli_reports_skip_with_reason(tmp_path, ci):
    """A missing simulator is a clear skip for a user and a failure in CI."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PATH": os.path.dirname(sys.executable), "CI": ci}
    res = subprocess.run([sys.executable, "-m", "prunehw.cli", "sim", "--simulator", "icarus", "--images", "1"],
                         cwd=tmp_path, capture_output=True, text=True, env=env)
    if ci:
        assert res.returncode == 2
        assert "error: sim icarus: Icarus Verilog is not installed" in res.stderr
        assert "CI=true" in res.stderr
    else:
        assert res.returncode == 0
        assert "sim icarus: SKIPPED, Icarus Verilog is not installed" in res.stdout


@pytest.fixture(scope="module")
def full_test_set_flow(quick_flow):
    """The quick flow's models, checked on the whole 10k test set."""
    from prunehw.flow import Flow

    cfg = quick_flow.cfg
    cfg = cfg.replace(data=cfg.data.replace(test_limit=0))
    flow = Flow(cfg, log=print)
    return flow


@pytest.mark.regression
def test_regression_verilator_all_images(full_test_set_flow):
    _need("verilator")
    flow = full_test_set_flow
    assert len(flow.data.x_test) == 10000
    _check(flow, flow.sim(VARIANTS, "verilator", 0, workers=2), 10000)


@pytest.mark.regression
def test_regression_icarus_subset(full_test_set_flow):
    _need("icarus")
    n = ICARUS_IMAGES
    _check(full_test_set_flow, full_test_set_flow.sim(VARIANTS, "icarus", n, workers=2), n)


@pytest.mark.regression
# (matrix-0.80: the pruned design with gathered rows and an uneven map; dense runs on the default network below.
# The unstructured variant's design is the dense one's structure with zero weights; its campaign is left to
# `prunehw mutate`, which keeps .ci/run within its time)
@pytest.mark.parametrize("variant", ["matrix-0.80"])
def test_mutation_campaign_catches_every_fault(quick_flow, variant):
    """Every single fault of ``hw.faults`` built into the variant's RTL must be caught; most share one build."""
    from prunehw.sim.faults import FAULTS

    _need("verilator")
    rows = quick_flow.mutate(variant, 5, workers=2)
    assert sorted(r["fault"] for r in rows) == sorted(FAULTS)
    # (a fault whose target this design lacks is reported as not applicable, with why; the rest must be caught)
    applicable = [r for r in rows if r["caught"] != "n/a"]
    assert len(applicable) >= 20 and all(r["caught_by"].startswith("not applicable: ") for r in rows if r not in applicable)
    missed = [r["fault"] for r in applicable if not r["caught"]]
    assert not missed, f"{variant}: faults not caught (a hole in the test set): {missed}"
    assert sum(r["build"] == "shared" for r in rows) >= 20, "the shared build (fault_select) should hold most faults"


@pytest.mark.regression
def test_mutation_campaign_on_the_default_dense_network(tmp_path):
    # (the quick network's dense variant is not run as well: this one is the same kind of design, larger, and
    # harder to saturate)
    """The shipped network, not only the quick one: the default configuration's dense variant (trained here as
    `make sim` trains it), whose deeper layers the test images never saturate. Every fault (requantization that
    wraps instead of saturating among them) must be caught, and every layer event reached or proven unreachable:
    conv2's saturation by the window-vertex bound, dense1's saturation and the dense layers' accumulator top bits
    by the searched stimulus (the accumulators sized by the contract's interval bounds along the network, so their
    top bits are within an image's reach)."""
    from prunehw.core.artifacts import read_json
    from prunehw.core.config import load_config
    from prunehw.flow import Flow
    from prunehw.sim.faults import FAULTS

    _need("verilator")
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "default.toml")
    flow = Flow(cfg.replace(build_dir=str(tmp_path)), log=print)
    rows = flow.mutate("dense", 10, workers=2)
    assert sorted(r["fault"] for r in rows) == sorted(FAULTS)
    missed = [r["fault"] for r in rows if r["caught"] is False]
    assert not missed, f"default dense: faults not caught: {missed}"
    coverage = read_json(flow.run_dir / "summary.json")["mutation"]["dense"]["coverage"]
    assert coverage["reached_by"]["dense1:saturation"] >= 0, coverage
    assert not coverage["not_reached"], coverage
    assert "conv2:saturation" in coverage["unreachable"], coverage
    assert {"dense1:accumulator_top", "dense2:accumulator_top"} <= set(coverage["reached_by"]), coverage
