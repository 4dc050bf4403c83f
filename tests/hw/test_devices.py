"""The device table and the fit check made before any tool runs: every part's figures, a design refused in one
line naming what the part lacks, the synthesis stage recording a refusal (no figures) instead of running tools."""

import json

import pytest

from prunehw.core.errors import ConfigError
from prunehw.hw.target.devices import DEVICES, device, fit_problem

#: The default 8x8 array's dense design, as its accelerator.json describes it (memory shapes in bits x words).
DENSE_SHAPES = {"weights": {"bits": 512, "words": 1700}, "psum": {"bits": 216, "words": 676},
                "act0": {"bits": 64, "words": 2704}}


def test_every_ecp5_part_is_described_as_its_data_sheet_gives_it():
    assert {n: (d.luts, d.brams, d.dsps) for n, d in DEVICES.items()} == {
        "LFE5U-25F": (24_288, 56, 28), "LFE5U-45F": (43_848, 108, 72), "LFE5U-85F": (83_640, 208, 156)}
    for d in DEVICES.values():
        assert d.ram_bits == d.brams * 18 * 1024 and d.synth_command == "synth_ecp5"
        assert d.nextpnr_args[0] == f"--{d.name[6:8]}k" and d.platform().device == d.name


def test_an_unknown_device_is_refused_in_one_line_naming_those_allowed():
    with pytest.raises(ConfigError) as err:
        device("LFE5U-12F")
    assert str(err.value) == "unknown device 'LFE5U-12F'; allowed: LFE5U-25F, LFE5U-45F, LFE5U-85F"


def test_the_fit_check_names_what_is_short_and_by_how_much():
    bits = sum(s["bits"] * s["words"] for s in DENSE_SHAPES.values())
    assert fit_problem(device("LFE5U-85F"), DENSE_SHAPES, 64) is None
    small = device("LFE5U-25F")
    line = fit_problem(small, DENSE_SHAPES, 64)
    assert line == (f"does not fit the LFE5U-25F: memory: needs {bits / 1e6:.2f} Mbit, has 1.03 Mbit of block RAM "
                    f"({bits / small.ram_bits:.2f}x); multipliers: needs 64 MULT18X18D, has 28 (36 short)")
    assert "\n" not in line
    assert fit_problem(device("LFE5U-45F"), {"w": [18, 1024]}, 72) is None      # ([bits, words] pairs too)
    assert fit_problem(device("LFE5U-45F"), {"w": [18, 1024]}, 73).endswith("needs 73 MULT18X18D, has 72 (1 short)")


def test_the_synthesis_stage_refuses_a_design_the_device_cannot_hold_before_any_tool(tmp_path, monkeypatch):
    """A variant the device cannot hold is recorded as refused (``fits`` false, the one-line problem, no
    resource figures) and no tool runs; the table lists it under the variants that were synthesised."""
    import prunehw.hw.target.synth as synth
    from prunehw.core.config import load_config
    from prunehw.synth_report import format_synth_table, synth_variants

    ran = []
    monkeypatch.setattr(synth, "tools_missing", lambda: None)
    monkeypatch.setattr(synth, "tool_versions", lambda: {"yosys": "test"})
    monkeypatch.setattr(synth, "run_synthesis", lambda *a, **k: ran.append(a))
    run_dir = tmp_path / "run"
    (run_dir / "dense" / "rtl").mkdir(parents=True)
    (run_dir / "dense" / "rtl" / "accelerator.json").write_text(json.dumps(
        {"memory_shapes": DENSE_SHAPES, "array": {"rows": 8, "cols": 8}}))
    (run_dir / "summary.json").write_text("{}")
    cfg = load_config(None).model_copy(update={"synth": load_config(None).synth.model_copy(update={"device": "LFE5U-25F"})})

    class FakeFlow:
        def __init__(self):
            from prunehw.core.layout import RunLayout

            self.cfg, self.run_dir, self.layout, self.lines = cfg, run_dir, RunLayout(run_dir), []

        def rtl(self, v):
            return run_dir / v / "rtl"

        def log(self, line):
            self.lines.append(line)

    flow = FakeFlow()
    entry = synth_variants(flow, ["dense"])["dense"]
    assert not ran
    assert entry["fits"] is False and entry["device"] == "LFE5U-25F" and "lut" not in entry
    assert entry["problem"].startswith("does not fit the LFE5U-25F: memory: needs")
    assert flow.lines == [f"synth dense: {entry['problem']} (nothing synthesised)"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["variants"]["dense"]["synth"] == entry
    assert json.loads((run_dir / "dense" / "synth" / "synth.json").read_text()) == entry
    assert format_synth_table(summary) == f"synthesis: no variant synthesised\n  dense: {entry['problem']}"


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
    cfg.write_text(f'[run]\nbuild_dir = "{tmp_path / "build"}"\n\n[synth]\ndevice = "iCE40UP5K"\n')
    with pytest.raises(ConfigError, match=r"^unknown device 'iCE40UP5K'; allowed: LFE5U-25F, LFE5U-45F, LFE5U-85F$"):
        Flow(load_config(cfg))
    assert not (tmp_path / "build").exists() or not any((tmp_path / "build").rglob("*.keras"))
