"""Shared fixtures: a tiny MNIST subset and small networks, so unit tests stay fast on 2 cores."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

#: the longest regression (about 20 minutes alone), started first: in collection order it came last, and one
#: worker ran it alone after the other had finished everything else
_LONGEST_FIRST = "test_resnet8_runs_the_whole_flow"


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: not item.name.startswith(_LONGEST_FIRST))      # (stable: the rest keep their order)


@pytest.fixture(scope="session")
def mnist():
    from prunehw.model.data import load_mnist

    return load_mnist()


@pytest.fixture(scope="session")
def tiny_data(mnist):
    """2k training, 500 validation and 500 test images of MNIST."""
    from prunehw.model.data import Dataset

    return Dataset(mnist.x_train[:2000], mnist.y_train[:2000], mnist.x_val[:500], mnist.y_val[:500],
                   mnist.x_test[:500], mnist.y_test[:500], source="mnist", digest=mnist.digest)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def quick_flow(tmp_path_factory):
    """The QUICK=1 flow (configs/quick.toml) trained, pruned, quantized and generated in a temporary build folder."""
    from prunehw.core.config import load_config
    from prunehw.flow import Flow

    cfg = load_config(ROOT / "configs" / "quick.toml")
    cfg = cfg.replace(build_dir=str(tmp_path_factory.mktemp("quickflow")))
    flow = Flow(cfg, log=lambda *a: None)
    for variant in flow.variant_names():
        flow.rtl(variant)
    return flow
