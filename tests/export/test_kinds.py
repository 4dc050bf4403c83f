"""The layer kinds' registries agree with each other: every kind a config may name has a model handler, every Keras
class those build is read into the contract by an export handler (a ReLU is fused into the layer before it), and
every contract kind compiles to the accelerator (the merge, ``add``, fused into the op before it:
tests/export/test_residual.py)."""

from prunehw.core.config import LAYER_TYPES
from prunehw.export.kinds import KINDS as CONTRACT_KINDS
from prunehw.hw.compile.program import _COMPILE, _ROWS
from prunehw.model.activations import RELU_CAPS
from prunehw.model.kinds import KINDS as MODEL_KINDS


def test_every_config_type_has_a_model_kind():
    # (but the merge: the config's network is a chain; a user's model brings it)
    assert set(MODEL_KINDS) == set(LAYER_TYPES) | {"add"}


def test_every_model_kind_is_read_into_the_contract_or_fused():
    keras_read = {c for k in CONTRACT_KINDS.values() for c in k.keras}
    for t, kind in MODEL_KINDS.items():
        assert kind.keras in keras_read or t in RELU_CAPS, t
        if kind.keras in keras_read:
            (contract_kind,) = [k for k in CONTRACT_KINDS.values() if kind.keras in k.keras]
            assert contract_kind.weighted == kind.weighted, t


#: contract kinds with no op of their own: fused into the write-back of the op before them (tests/export/test_residual.py)
FUSED = {"add"}


def test_every_contract_kind_compiles():
    assert set(_COMPILE) == set(CONTRACT_KINDS) - FUSED
    assert {t for t, k in CONTRACT_KINDS.items() if k.weighted} == set(_ROWS)
