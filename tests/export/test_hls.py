"""hls4ml's C simulation computes the golden model's integers exactly (and the check would see if not)."""

import numpy as np
import pytest

from prunehw.core.config import LayerSpec as L, NetworkConfig
from prunehw.export.contract import load_contract, save_contract
from prunehw.export.hls import convert, hls_config, predict_ints
from prunehw.export.golden import golden
from prunehw.model.network import build_model
from prunehw.export.quantize import dequantized_model, quantize

NET = NetworkConfig(layers=(L(type="conv2d", filters=4, kernel=3), L(type="relu"), L(type="maxpool2d", pool=2),
                            L(type="conv2d", filters=6, kernel=3), L(type="relu"), L(type="maxpool2d", pool=2),
                            L(type="flatten"), L(type="dense", units=12), L(type="relu"), L(type="dense", units=10)))


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_data):
    from prunehw.model.train import fit

    model = build_model(NET, (28, 28, 1), 10, seed=5)
    fit(model, tiny_data, 1, 64, 2e-3, desc="hls test")
    d = tmp_path_factory.mktemp("hls")
    spec, w, b = quantize(model, tiny_data.x_train[:128])
    save_contract(d / "contract.json", spec, w, b)
    contract = load_contract(d / "contract.json")
    deq = dequantized_model(model, contract)
    return d, contract, deq, convert(deq, contract, d / "hls")


def test_hls_csim_is_bit_exact(exported, tiny_data):
    d, contract, _, hmodel = exported
    x = tiny_data.x_test[:60]
    got = predict_ints(hmodel, d / "hls", contract, x, workers=2, chunk=20)
    want = golden(contract, x)
    assert got.shape == want.shape == (60, 10)
    assert int(np.all(got == want, axis=1).sum()) == 60


def test_config_is_generated_from_the_contract(exported):
    _, contract, deq, _ = exported
    names = hls_config(deq, contract)["LayerName"]
    for layer in contract.weighted():
        p = names[layer["name"]]["Precision"]
        # written out from the contract's numbers here, not from the exporter's helper: an accumulator of
        # B bits with F fractional bits is ap_fixed<B,B-F>, and conv/dense results stay at that precision
        a = layer["accum"]
        assert p["accum"] == p["result"] == f"ap_fixed<{a['bits']},{a['bits'] - a['frac']}>", (layer["name"], p)
        w = layer["weight"]
        assert p["weight"] == f"ap_fixed<{w['bits']},{w['bits'] - w['frac']}>"
        if layer["output"]["name"]:
            o = layer["output"]
            kind = "ap_fixed" if o["signed"] else "ap_ufixed"
            assert names[o["name"]]["Precision"]["result"] == f"{kind}<{o['bits']},{o['bits'] - o['frac']},AP_RND,AP_SAT>"


def test_truncating_relu_is_caught(exported, tiny_data, tmp_path, monkeypatch):
    """A design that rounds differently (truncation instead of round-half-up) must not pass."""
    import prunehw.export.hls as hls

    _, contract, deq, _ = exported
    real = hls.hls_config

    def truncating(model, c, backend="Vivado"):
        cfg = real(model, c, backend)
        for name, entry in cfg["LayerName"].items():
            r = entry.get("Precision", {}).get("result", "")
            if isinstance(r, str) and "AP_RND" in r:
                entry["Precision"]["result"] = r.replace("AP_RND", "AP_TRN")
        return cfg

    monkeypatch.setattr(hls, "hls_config", truncating)
    hmodel = hls.convert(deq, contract, tmp_path / "bad")
    x = tiny_data.x_test[:20]
    got = predict_ints(hmodel, tmp_path / "bad", contract, x, workers=1)
    assert int(np.all(got == golden(contract, x), axis=1).sum()) < 20
