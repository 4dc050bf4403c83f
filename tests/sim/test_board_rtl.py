"""The board core (the accelerator behind its serial host link) in Verilator, a host on its serial pins: a few test
images bit-exact with the counters of the model and every framing error answered (``make test``); the board
top's bitstream for the ULX3S-85F (regression: synthesis and place-and-route take minutes)."""

import pytest
from cli_helpers import need_tool

from prunehw.sim.runner import simulator_missing


def test_board_core_serves_a_host_through_its_serial_pins(quick_flow):
    from prunehw.board import simulate_board
    from prunehw.core.artifacts import read_json
    from prunehw.flow import Flow

    need_tool(simulator_missing("verilator"))
    entry = simulate_board(quick_flow, "matrix-0.80", "verilator")
    n = quick_flow.cfg.board.sim_images
    assert (entry["images"], entry["match"], entry["counters_equal"]) == (n, n, n)
    assert entry["info_equal"] and entry["errors_as_expected"]
    assert set(entry["errors_answered"]) >= {"bad_command", "bad_length", "bad_checksum", "timeout"}
    summary = read_json(quick_flow.run_dir / "summary.json")["variants"]["matrix-0.80"]
    assert summary["board"]["sim_verilator"] == entry
    lines = []     # run again: up to date, not simulated again
    assert simulate_board(Flow(quick_flow.cfg, log=lines.append), "matrix-0.80", "verilator") == entry
    assert lines[-1] == f"board sim matrix-0.80: up to date, {quick_flow.run_dir / 'matrix-0.80' / 'board' / 'sim_verilator'}"


@pytest.mark.regression
def test_bitstream_for_the_ulx3s_closes_at_its_clock(quick_flow):
    from prunehw.board import build_bitstream
    from prunehw.hw.target.synth import tools_missing

    need_tool(tools_missing())
    entry = build_bitstream(quick_flow, "matrix-0.80")
    b = quick_flow.cfg.board
    assert entry["fits"] and entry["meets_timing"] and entry["fmax_mhz"] >= b.clock_mhz == entry["clock_mhz"]
    assert entry["pll"]["mhz"] == b.clock_mhz and entry["divisor"] == b.divisor
    bit = open(entry["bitstream"], "rb").read()
    assert len(bit) == entry["bitstream_bytes"] > 100_000
    assert entry["dsp"] > 0 and entry["bram"] > 0 and entry["lut"] > 0


def test_the_icebreaker_board_core_serves_a_host_with_its_buffers_in_single_port_ram(quick_flow, monkeypatch):
    """``[board] name = "iCEBreaker"``: the board core's iCE40 flavour (SPRAM buffers, no primitive) in Verilator
    with a host on its serial pins, its files and figures beside the ULX3S's (``board/iCEBreaker``,
    ``board.iCEBreaker``). The quick variants' 8-bit weights fit the UP5K on no array, so this test builds the
    2x2 array it would refuse (the flavour's behaviour, not a fit); the refusal itself is the next test."""
    import prunehw.hw.generate as generate
    from prunehw.board import simulate_board
    from prunehw.core.artifacts import read_json
    from prunehw.core.config import ArrayConfig
    from prunehw.flow import Flow

    need_tool(simulator_missing("verilator"))
    monkeypatch.setattr(generate, "array_for", lambda contract, array, device: ArrayConfig(rows=2, cols=2))
    cfg = quick_flow.cfg.replace(board=quick_flow.cfg.board.replace(name="iCEBreaker"))
    assert cfg.board.clock == 12.0 and cfg.board.divisor == 12 and cfg.board.device == "iCE40UP5K"
    flow = Flow(cfg)
    entry = simulate_board(flow, "matrix-0.80", "verilator")
    n = cfg.board.sim_images
    assert (entry["images"], entry["match"], entry["counters_equal"], entry["array"]) == (n, n, n, "2x2")
    assert entry["info_equal"] and entry["errors_as_expected"]
    folder = flow.run_dir / "matrix-0.80" / "board" / "iCEBreaker" / "sim_verilator"
    text = (folder / "prunehw_board.v").read_text()
    assert 'ram_style = "huge"' in text and "MULT18X18D" not in text and not (folder / "ecp5_models.v").exists()
    assert read_json(flow.run_dir / "summary.json")["variants"]["matrix-0.80"]["board"]["iCEBreaker"]["sim_verilator"] == entry


def test_a_variant_the_icebreaker_cannot_hold_is_refused_in_one_line(quick_flow):
    from prunehw.board import simulate_board
    from prunehw.core.errors import ConfigError
    from prunehw.flow import Flow

    cfg = quick_flow.cfg.replace(board=quick_flow.cfg.board.replace(name="iCEBreaker"))
    with pytest.raises(ConfigError) as err:
        simulate_board(Flow(cfg), "dense", "verilator")
    assert "\n" not in str(err.value)
    assert str(err.value).startswith("does not fit the iCE40UP5K on a 1x1 array: block RAM: needs ")
