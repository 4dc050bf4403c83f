"""SCALE-Sim, run in GEMM mode, gives a positive cycle count per layer that grows with K; bad arguments are refused."""

from __future__ import annotations

import re

import pytest

from prunehw.hw.models.scalesim_compare import DATAFLOWS, scalesim_cycles

LAYERS = [("conv", 676, 9, 16), ("dense", 1, 800, 128)]


@pytest.mark.parametrize("dataflow", DATAFLOWS)
def test_positive_int_per_layer(tmp_path, dataflow):
    cycles = scalesim_cycles(LAYERS, 8, 8, tmp_path / "run", dataflow=dataflow)
    assert list(cycles) == ["conv", "dense"]
    for name, value in cycles.items():
        assert type(value) is int and value > 0, (name, value)


def test_more_reduction_rows_take_more_cycles(tmp_path):
    cycles = scalesim_cycles([("small_k", 64, 8, 16), ("large_k", 64, 64, 16)], 8, 8, tmp_path)
    assert cycles["large_k"] > cycles["small_k"]


def test_deterministic_and_reusable_work_dir(tmp_path):
    # The second run reuses the folder, so it must not read back the first run's report.
    first = scalesim_cycles(LAYERS, 8, 8, tmp_path)
    assert scalesim_cycles(LAYERS, 8, 8, tmp_path) == first
    assert scalesim_cycles(LAYERS[:1], 8, 8, tmp_path) == {"conv": first["conv"]}


@pytest.mark.parametrize("kwargs, named", [
    ({"rows": 0}, "0"),
    ({"cols": -3}, "-3"),
    ({"dataflow": "rs"}, "'rs'"),
    ({"layers": [("conv", 676, 0, 16)]}, "(676, 0, 16)"),
    ({"layers": [("a,b", 1, 2, 3)]}, "'a,b'"),
    ({"layers": [("x", 1, 2, 3), ("x", 4, 5, 6)]}, "'x'"),
    ({"layers": []}, "empty"),
])
def test_bad_arguments_name_the_value(tmp_path, kwargs, named):
    args = {"layers": LAYERS, "rows": 8, "cols": 8, "work_dir": tmp_path, "dataflow": "ws"} | kwargs
    with pytest.raises(ValueError, match=re.escape(named)):
        scalesim_cycles(**args)


def test_unknown_dataflow_lists_the_allowed_ones(tmp_path):
    with pytest.raises(ValueError, match="allowed: ws, os, is"):
        scalesim_cycles(LAYERS, 8, 8, tmp_path, dataflow="WS")
