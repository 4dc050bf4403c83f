"""Shared fixtures: a tiny MNIST subset and small networks, so unit tests stay fast on 2 cores."""

from __future__ import annotations

import fcntl
import os
import shutil
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
    """The QUICK=1 flow (configs/quick.toml) trained, pruned, quantized and generated, in a temporary build folder
    of this session (and pytest-xdist worker) of its own.

    It is built once, in ``build/test-cache/quickflow``, by whichever worker of whichever test session comes first
    (the others wait on a lock), and copied: a rerun, the other worker and the regression session after the fast
    suite only copy it. The flow's own cache keys (code, config, data) decide whether the shared build is up to
    date, as they do for ``make sim``; the copy is what a fresh build would make (a run is deterministic)."""
    from prunehw.core.config import load_config
    from prunehw.flow import Flow

    cfg = load_config(ROOT / "configs" / "quick.toml")
    shared = ROOT / "build" / "test-cache" / "quickflow"
    shared.mkdir(parents=True, exist_ok=True)
    mine = tmp_path_factory.mktemp("quickflow")
    with open(shared.parent / "quickflow.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        flow = Flow(cfg.replace(build_dir=str(shared)), log=lambda *a: None)
        for variant in flow.variant_names():
            flow.rtl(variant)
        shutil.copytree(shared, mine, dirs_exist_ok=True)
    return Flow(cfg.replace(build_dir=str(mine)), log=lambda *a: None)
