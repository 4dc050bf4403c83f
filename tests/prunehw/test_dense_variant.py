"""``dense`` is a variant like the others (method ``dense``: nothing removed), so the trained network can be
quantized another way beside the pruned variants: ``dense-w4`` is the dense network with 4-bit weights."""

import pytest

from prunehw.core.artifacts import read_json, sha256_file
from prunehw.core.config import VariantConfig, load_config
from prunehw.core.errors import ConfigError


def test_dense_variants_are_named_and_checked():
    cfg = load_config(None)
    assert cfg.variant("dense") == VariantConfig(method="dense") and cfg.variant_names[0] == "dense"
    assert VariantConfig(method="dense", weight_bits=4, quant="qat").name == "dense-w4-qat"
    assert VariantConfig(method="dense", weight_bits=4).pruning().name == "dense"
    with pytest.raises(ConfigError, match="a dense variant removes nothing; allowed without ratio or a target"):
        VariantConfig(method="dense", ratio=0.5)
    with pytest.raises(ConfigError, match="'dense' .* is every run's first variant, not listed"):
        cfg.replace(variants=(VariantConfig(method="dense"),))
    with pytest.raises(ConfigError, match="did you mean 'dense-w4'"):
        cfg.replace(variants=(VariantConfig(method="dense", weight_bits=4),)).variant("dense-w5")


def test_a_dense_variant_quantized_otherwise_runs_like_the_others(quick_flow):
    """The quick run with ``dense-w4`` added: its float model is the trained network's (a copy, nothing removed,
    ``pruned_as`` dense), its contract has 4-bit weights, its accelerator is generated; ``dense`` is unchanged."""
    lines = []
    flow = quick_flow.with_variant(VariantConfig(method="dense", weight_bits=4))
    flow.log = lines.append
    assert flow.variant_names()[0] == "dense" and "dense-w4" in flow.variant_names()
    assert sha256_file(flow.float_model("dense-w4")) == sha256_file(flow.train())
    contract = read_json(flow.quantize("dense-w4"))
    assert {l["weight"]["bits"] for l in contract["layers"] if "weight" in l} == {4}
    assert (flow.rtl("dense-w4") / "accelerator.json").is_file()
    flow.quantize("dense")
    assert any(line.startswith("quantize dense: up to date") for line in lines), lines
    summary = read_json(flow.layout.summary)["variants"]
    mine, dense = summary["dense-w4"], summary["dense"]
    assert mine["method"] == "dense" and mine["pruned_as"] == "dense" and mine["weight_bits"] == 4
    assert mine["weights_kept"] == dense["weights_kept"] == dense["weights_total"]
    assert 0 < mine["accuracy"]["quant"] <= 1 and "cycles" in mine
