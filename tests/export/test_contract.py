import json

import numpy as np
import pytest

from prunehw.core.errors import ModelFileError
from prunehw.export.contract import fixed_type, load_contract, save_contract


def _spec():
    fmt = {"bits": 8, "frac": 8, "signed": False}
    return {"input": {"shape": [4], **fmt}, "layers": [{
        "name": "d", "type": "dense", "inputs": ["input"], "shape": [2], "rows": 4, "out_channels": 2, "in_channels": 4, "input": fmt,
        "weight": {"bits": 8, "frac": 6}, "bias": {"bits": 6, "frac": 14}, "accum": {"bits": 18, "frac": 14},
        "output": {"bits": 18, "frac": 14, "signed": True, "relu": False, "name": None}}]}


def _write(tmp_path):
    return save_contract(tmp_path / "contract.json", _spec(), {"d": np.arange(8).reshape(4, 2)}, {"d": np.array([1, -1])})[0]


def _layer0(path, **changes):
    spec = json.loads(path.read_text())
    spec["layers"][0].update(changes)
    path.write_text(json.dumps(spec))


def _without(path, key):
    spec = json.loads(path.read_text())
    del spec["layers"][0][key]
    path.write_text(json.dumps(spec))


def test_round_trip(tmp_path):
    c = load_contract(_write(tmp_path))
    np.testing.assert_array_equal(c.weights["d"], np.arange(8).reshape(4, 2))
    assert c.spec["version"] == 2
    assert [(n.name, n.kind, n.inputs, n.shape) for n in c.graph] == [("d", "dense", ("input",), (2,))]


def test_fixed_types():
    assert fixed_type(8, 8, signed=False) == "ap_ufixed<8,0>"
    assert fixed_type(23, 13) == "ap_fixed<23,10>"
    assert fixed_type(8, 3, signed=False, rounding=True, saturate=True) == "ap_ufixed<8,5,AP_RND,AP_SAT>"


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.unlink(), "contract file not found"),
    (lambda p: p.write_text("{ nope"), "is not valid JSON"),
    (lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "version": 99})), "version 99 is not supported"),
    (lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "layers": [{"type": "lstm"}]})), "type 'lstm'; allowed"),
    (lambda p: _layer0(p, stride=2), "layer 'd' (dense) has stride/padding; only conv2d layers take them"),
    (lambda p: _layer0(p, type="conv2d", kernel=2, padding="full"), "layer 'd' padding = 'full'; allowed: valid, same"),
    (lambda p: _layer0(p, type="conv2d", kernel=2, stride=0), "layer 'd' stride = 0; allowed: an integer >= 1"),
    (lambda p: _layer0(p, type="conv2d", kernel=[2, 2]), "layer 'd' kernel = [2, 2]; allowed: an integer >= 1, or [kh, kw] with kh != kw"),
    (lambda p: _layer0(p, type="conv2d", kernel=2), "layer 'd' has 4 rows; its kernel's 4 taps times 4 input channels are 16"),
    (lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "version": 1})),
     "version 1 is not supported; allowed: 2 (written by an older prunehw: run prunehw export again)"),
    (lambda p: _layer0(p, inputs=["conv9"]), "layer 'd' reads 'conv9', which is not the input or a layer before it"),
    (lambda p: _layer0(p, inputs=[]), "layer 'd' reads nothing; allowed: one or more inputs"),
    (lambda p: _without(p, "shape"), "layer 'd' lacks 'shape'; every layer names its type, inputs and output shape"),
    (lambda p: p.with_name("weights.npz").write_bytes(b"xx"), "weights file weights.npz has sha256"),
    (lambda p: p.with_name("weights.npz").unlink(), "weights file not found"),
])
def test_damaged_contract(tmp_path, damage, message):
    path = _write(tmp_path)
    damage(path)
    with pytest.raises(ModelFileError) as exc:
        load_contract(path)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_weights_beyond_their_declared_width_are_refused_not_wrapped(tmp_path):
    """An int8 cast used to wrap a 9-bit weight silently; now the writer refuses, naming the layer and the range."""
    from prunehw.core.errors import ModelFileError

    with pytest.raises(ModelFileError, match=r"layer 'd': weights span 0..200, declared 8-bit"):
        save_contract(tmp_path / "contract.json", _spec(), {"d": np.array([[0, 200]] * 4)}, {"d": np.array([1, -1])})
    assert not (tmp_path / "contract.json").exists() and not (tmp_path / "weights.npz").exists()


@pytest.mark.parametrize("bits", [1, 9, 16])
def test_bit_widths_the_hardware_cannot_hold_are_refused_at_config_time(bits):
    from prunehw.core.config import QuantConfig
    from prunehw.core.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"quant.weight_bits = {bits}; allowed: integers 2..8"):
        QuantConfig(weight_bits=bits)
