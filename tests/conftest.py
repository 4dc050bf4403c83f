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

#: Seconds the regression's tests took in a fresh-clone CI run (2 cores, idle machine; a test not named takes about no
#: time). The regression's workers get their shares by these (below): in collection order the long tests piled up
#: on one worker, and the other sat idle for minutes at the end.
EXPECTED_SECONDS = {
    "test_resnet8_runs_the_whole_flow": 1009, "test_a_depthwise_separable_reference_model_runs_the_whole_flow[ds_cnn": 755,
    "test_regression_icarus_subset": 534, "test_mutation_campaign_on_the_default_dense_network": 428,
    "test_bitstream_for_the_ulx3s_closes_at_its_clock": 382, "test_dense_variant_synthesises_routes_and_is_cached": 312,
    "test_regression_verilator_all_images": 279, "test_a_depthwise_separable_reference_model_runs_the_whole_flow[mobilenet": 190,
    "test_user_model_runs_the_whole_flow[lenet5": 186, "test_mutation_campaign_catches_every_fault": 129,
    "test_pareto_points_verified_in_rtl": 125, "test_array_shapes_in_rtl[verilator-16-16]": 90,
    "test_user_model_runs_the_whole_flow": 65, "test_a_board_top_that_misses_its_clock": 62,
    "test_the_icebreaker_bitstream_of_a_small_board_core": 90,
}


def _expected(item) -> int:
    return next((t for name, t in EXPECTED_SECONDS.items() if item.name.startswith(name)), 0)


@pytest.hookimpl(trylast=True)      # (after the markers' deselection: only the tests that run are shared out)
def pytest_collection_modifyitems(config, items):
    """Order a regression run's tests so that pytest-xdist's work-stealing scheduler, which hands each worker a
    contiguous share of the collection (the same number of tests each) and later moves tests from the end of one
    queue to another, starts every worker on its longest tests and gives each about the same expected time:
    longest first, each test to the share with the least expected time that still has room. Any other run keeps
    collection order (its many short tests balance by stealing, and a module's tests stay together for its
    fixtures)."""
    if not items or not all(item.get_closest_marker("regression") for item in items):
        return
    workers = getattr(config, "workerinput", {}).get("workercount", 1)
    sizes, left = [], len(items)
    for w in range(workers, 0, -1):          # (the scheduler's shares: len // workers first, then of the rest)
        sizes.append(left // w)
        left -= sizes[-1]
    shares = [[] for _ in sizes]
    for item in sorted(items, key=_expected, reverse=True):     # (stable: equal times keep collection order)
        k = min((k for k in range(workers) if len(shares[k]) < sizes[k]), key=lambda k: sum(map(_expected, shares[k])))
        shares[k].append(item)
    items[:] = [item for share in shares for item in share]


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
