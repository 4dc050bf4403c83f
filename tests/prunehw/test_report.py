"""The terminal report's lines for hardware targets and the board, from a summary written by hand."""

import json

from prunehw.report import format_report


def test_targets_and_board_are_reported_against_what_was_measured(tmp_path):
    summary = {"variants": {
        "dense": {"cycles": {"rtl": 11648, "analytic": 11648}, "energy_pj": {"total": 3.09e6}},
        "matrix-c2900": {"target_cycles": 2900, "cycles": {"rtl": 2888, "analytic": 2888}},
        "matrix-c2000": {"target_cycles": 2000, "cycles": {"analytic": 2100}},
        "matrix-e0.4": {"target_energy_uj": 0.4, "energy_pj": {"total": 0.45e6}},
        "matrix-ips40000": {"target_images_per_s": 40000, "target_cycles_for_rate": 2500, "target_clock_mhz": 100.0,
                            "cycles": {"rtl": 2450}, "synth": {"lut": 1, "ff": 1, "carry": 1, "dsp": 1, "bram": 1,
                                                          "fmax_mhz": 78.4, "device": "LFE5U-85F", "target_mhz": 100}},
        "matrix-0.80": {"board": {
            "bitstream": {"clock_mhz": 50.0, "fmax_mhz": 99.37, "lut": 4985, "ff": 13097, "carry": 1654, "dsp": 64,
                          "bram": 47, "capacity": {"lut": 83640, "ff": 83640, "carry": 41820, "dsp": 156, "bram": 208},
                          "bitstream": "x.bit"},
            "sim_verilator": {"simulator": "verilator", "images": 4, "match": 4, "counters_equal": 4}}},
    }}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    text = format_report(tmp_path)
    assert "matrix-c2900: target 2900 cycles per image; analytic 2888, RTL 2888: met" in text
    assert "matrix-c2000: target 2000 cycles per image; analytic 2100, RTL not simulated" in text
    assert "matrix-e0.4: target 0.4 uJ per inference; from the RTL counters 0.450 uJ: NOT met" in text
    assert ("matrix-ips40000: target 40,000 images/s (2500 cycles per image at 100 MHz); RTL 2450 cycles, "
            "40,816 images/s at 100 MHz: met, 32,000 at the routed Fmax 78.4 MHz") in text
    board = text[text.index("board: ULX3S-85F"):]
    row = next(line for line in board.splitlines() if line.startswith("matrix-0.80"))
    assert "50.0" in row and "99.37" in row and "4985" in row and "47  22.6%" in row
    assert row.endswith("verilator: 4/4 bit-exact, counters 4/4, framing errors answered")
