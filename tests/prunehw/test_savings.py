"""Savings figures are derived from this run's counters and files: change an input, the figure changes."""

import copy

import numpy as np
import pytest

from prunehw.report import savings_ratios
from prunehw.hw.models.energy import energy, gating_saved_pj, load_energy_table, sram_pj_per_bit
from prunehw.savings import csr_bytes

DESC = {"array": {"rows": 8, "cols": 8, "acc_bits": 24},
        "memories": {"weights": {"bytes": 40000, "bits_per_word": 512},
                     "activations": {"buffers": [900, 400, 256], "bits_per_word": 64, "image_bits_per_word": 64},
                     "psum": {"words": 100, "bits_per_word": 192}, "bias": {"words": 20, "bits_per_word": 192},
                     "row_table": {"words": 30, "bits_per_word": 120}}}
ACT = {"macs": 1000, "mults": 600, "mults_gated": 400, "weight_reads": 10, "weight_bits_read": 10 * 512,
       "act_reads": 500, "image_reads": 50,
       "act_writes": 40, "psum_reads": 30, "psum_writes": 30,
       "bias_reads": 20, "table_reads": 10, "beats": 100, "total_cycles": 200}


def test_energy_follows_every_counter():
    table = load_energy_table()
    base = energy(ACT, DESC, table)
    assert base["total"] == pytest.approx(sum(v for k, v in base.items() if k != "total"))
    assert base["multiply"] == pytest.approx(600 * table["mult_int8_pj"])
    assert base["accumulate"] == pytest.approx(1000 * table["add_int32_pj"])
    for key in ("mults", "mults_gated", "weight_bits_read", "act_reads", "image_reads", "act_writes", "psum_reads", "bias_reads", "table_reads"):
        changed = energy({**ACT, key: ACT[key] + 1}, DESC, table)
        assert changed["total"] > base["total"], key


def test_sram_energy_follows_horowitz_by_size():
    """Horowitz (ISSCC 2014): a 64-bit access costs about 10 pJ at 8 KB, 20 pJ at 32 KB, 100 pJ at 1 MB."""
    table = load_energy_table()
    per_64 = {size: sram_pj_per_bit(table, size) * 64 for size in (2048, 8192, 8193, 32768, 40000, 1 << 20, 1 << 22)}
    assert per_64 == {2048: 10.0, 8192: 10.0, 8193: 20.0, 32768: 20.0, 40000: 100.0, 1 << 20: 100.0, 1 << 22: 100.0}
    # the weight ROM here (40,000 B) is charged at the 1 MB figure, one 7,200 B activation bank at the 8 KB one
    parts = energy(ACT, DESC, table)
    assert parts["weight_sram"] == pytest.approx(10 * 8 * 8 * 8 * 100.0 / 64)
    assert parts["activation_sram_read"] == pytest.approx((500 + 50) * 8 * 8 * 10.0 / 64)


def test_energy_follows_the_widths():
    """4-bit weights halve the weight ROM's bits moved and the multiplier's partial products; 4-bit hidden
    activations halve the ping-pong buffers' words, not the image's bytes."""
    table = load_energy_table()
    base = energy(ACT, DESC, table)
    narrow = copy.deepcopy(DESC)
    narrow["array"].update(weight_bits=4, x_bits=9)
    narrow["memories"]["weights"].update(bits_per_word=256, bytes=20000)
    narrow["memories"]["activations"]["bits_per_word"] = 32
    parts = energy({**ACT, "weight_bits_read": 10 * 256}, narrow, table)
    assert parts["multiply"] == pytest.approx(base["multiply"] / 2)
    assert parts["weight_sram"] == pytest.approx(10 * 256 * 20.0 / 64)      # (and now a 32 KB memory, not 1 MB)
    assert parts["activation_sram_read"] == pytest.approx((500 * 32 + 50 * 64) * 10.0 / 64)
    assert parts["activation_sram_write"] == pytest.approx(base["activation_sram_write"] / 2)


def test_energy_table_is_data(tmp_path):
    import json

    path = tmp_path / "t.json"
    path.write_text(json.dumps({"source": "made up", "mult_int8_pj": 1.0, "add_int32_pj": 0.0,
                                "sram_64bit_access_pj": {"8192": 0.0}}))
    assert energy(ACT, DESC, load_energy_table(path))["total"] == 600.0   # only the multiplies cost here
    path.write_text(json.dumps({"mult_int8_pj": 1.0}))
    from prunehw.core.errors import ConfigError

    with pytest.raises(ConfigError, match="lacks 'source'"):
        load_energy_table(path)


def test_gating_saving_is_the_gated_multiplies():
    table = load_energy_table()
    assert gating_saved_pj(ACT, table) == pytest.approx(400 * table["mult_int8_pj"])
    assert gating_saved_pj({"macs": 5}, table) is None


def test_csr_counts_index_overhead():
    k = np.zeros((3, 3, 2, 4))
    k[0, 0, 0, 0] = 1.0
    k[2, 2, 1, 3] = -2.0
    # 2 non-zeros x (4 B value + 4 B column) + (18 rows + 1) x 4 B row pointers
    assert csr_bytes([k]) == 2 * 8 + 19 * 4


def _summary():
    return {"variants": {
        "dense": {"cycles": {"rtl": 1000}, "energy_pj": {"total": 50.0}, "storage_bytes": {"keras": 400, "savedmodel": 800,
                                                                                      "weights_float32": 1200}},
        "matrix-0.80": {"cycles": {"rtl": 250}, "energy_pj": {"total": 10.0}, "storage_bytes": {"keras": 100, "savedmodel": 200, "packed": 40,
                                                                                             "packed_weights": 30}},
    }}


def test_ratios_follow_the_measured_figures():
    r = savings_ratios(_summary())["matrix-0.80"]
    assert r == {"cycles": 4.0, "energy": 5.0, "storage_keras": 4.0, "storage_savedmodel": 4.0, "storage_packed": 10.0,
                 "storage_packed_weights": 40.0}
    for path, value in ((("cycles", "rtl"), 500), (("energy_pj", "total"), 25.0), (("storage_bytes", "keras"), 200)):
        s = copy.deepcopy(_summary())
        s["variants"]["matrix-0.80"][path[0]][path[1]] = value
        assert savings_ratios(s)["matrix-0.80"] != r


def test_unmeasured_figures_are_absent():
    s = _summary()
    del s["variants"]["matrix-0.80"]["energy_pj"]
    assert "energy" not in savings_ratios(s)["matrix-0.80"]
