"""The per-layer bit allocation: the smallest packed weight store within the accuracy budget, judged on the golden
integer model; its cost is the accelerator's weight tiles."""

import numpy as np
import pytest

from prunehw.core.config import LayerSpec as L, NetworkConfig, VariantConfig
from prunehw.core.errors import ConfigError
from prunehw.export.bit_allocation import allocate_weight_bits, packed_weight_bits
from prunehw.export.contract import Contract
from prunehw.export.golden import golden
from prunehw.export.quantize import quantize
from prunehw.model.network import build_model
from prunehw.model.train import fit

NET = NetworkConfig(layers=(L(type="conv2d", filters=4, kernel=3), L(type="relu"), L(type="maxpool2d", pool=2),
                            L(type="flatten"), L(type="dense", units=24), L(type="relu"), L(type="dense", units=10)))


@pytest.fixture(scope="module")
def trained(tiny_data):
    model = build_model(NET, (28, 28, 1), 10, seed=5)
    fit(model, tiny_data, 1, 64, 3e-3, desc="allocation test")
    return model


def test_packed_size_is_the_accelerators_tiles():
    spec = {"layers": [{"name": "a", "type": "conv2d"}, {"name": "p", "type": "maxpool2d"},
                       {"name": "b", "type": "dense", "rows_kept": list(range(9))}]}
    weights = {"a": np.zeros((9, 4)), "b": np.zeros((20, 10))}
    # a: 9 rows over 4 -> 3 row tiles, 4 columns -> 1: 3 tiles; b: 9 kept rows -> 3, 10 columns -> 3: 9 tiles
    assert packed_weight_bits(spec, weights, {"a": 6, "b": 3}, 4, 4) == 3 * 16 * 6 + 9 * 16 * 3


def test_search_stays_within_the_budget_and_shrinks_the_store(trained, tiny_data):
    calib, x, y = tiny_data.x_train[:64], tiny_data.x_val, tiny_data.y_val
    ref = float(np.mean(golden(Contract(*quantize(trained, calib, 8, 8)), x).argmax(axis=1) == y))
    alloc = allocate_weight_bits(trained, calib, x, y, act_bits=8, reference=ref, max_loss=1.0, rows=4, cols=4)
    assert alloc.met and 100 * (ref - alloc.accuracy) <= 1.0
    eight = alloc.trials[0]
    assert alloc.packed_bits < eight["packed_bits"] and set(alloc.bits) == {"conv1", "dense1", "dense2"}
    # the accuracy claimed is the golden model's at the chosen widths
    c = Contract(*quantize(trained, calib, alloc.bits, 8))
    assert float(np.mean(golden(c, x).argmax(axis=1) == y)) == alloc.accuracy
    # no layer can lose one more bit within the budget (the search stopped at a local minimum, not early)
    for name, bits in alloc.bits.items():
        if bits > 2:
            narrower = Contract(*quantize(trained, calib, {**alloc.bits, name: bits - 1}, 8))
            assert 100 * (ref - float(np.mean(golden(narrower, x).argmax(axis=1) == y))) > 1.0, name
    again = allocate_weight_bits(trained, calib, x, y, act_bits=8, reference=ref, max_loss=1.0, rows=4, cols=4)
    assert again.bits == alloc.bits and again.trials == alloc.trials


def test_a_budget_even_eight_bits_misses_keeps_eight_bits(trained, tiny_data):
    alloc = allocate_weight_bits(trained, tiny_data.x_train[:64], tiny_data.x_val, tiny_data.y_val, act_bits=8,
                                 reference=1.01, max_loss=0.5, rows=4, cols=4)
    assert not alloc.met and set(alloc.bits.values()) == {8} and len(alloc.trials) == 1


def test_auto_width_variant_config():
    v = VariantConfig(method="matrix", ratio=0.8, weight_bits="auto", quant="qat")
    assert v.name == "matrix-0.80-wauto-qat" and v.to_dict()["weight_bits"] == "auto" and "max_loss" not in v.to_dict()
    assert VariantConfig(method="matrix", ratio=0.8, weight_bits="auto", max_loss=1.0).name == "matrix-0.80-wauto1"
    with pytest.raises(ConfigError, match=r"weight_bits = 'eight'; allowed: integers 2..8, or \"auto\""):
        VariantConfig(method="matrix", ratio=0.8, weight_bits="eight")
    with pytest.raises(ConfigError, match="max_loss is the budget of weight_bits"):
        VariantConfig(method="matrix", ratio=0.8, max_loss=1.0)
