"""The budget_aware experiment on the quick flow: cost-aware matrix pruning meets the cycle and energy targets
that ratio-based matrix pruning reached, and the figure is written."""

import csv

from prunehw.experiments import run_experiments
from prunehw.flow import Flow


def test_budget_aware_meets_the_ratio_points_cycles_and_energy(quick_flow):
    cfg = quick_flow.cfg
    cfg = cfg.replace(experiments=cfg.experiments.replace(ratios=(0.8,), steps=1, finetune_epochs=1))
    written = run_experiments(Flow(cfg, log=lambda *a: None), only=["budget_aware"], log=lambda *a: None)
    paths = written["budget_aware"]
    assert [p.name for p in paths] == ["budget_aware.csv", "budget_aware.png", "budget_aware_energy.png"]
    assert all(p.stat().st_size > 0 for p in paths)
    (row,) = list(csv.DictReader(paths[0].open()))
    num = {k: float(v) for k, v in row.items() if not k.endswith("kept_shapes")}
    # the targets are the ratio-based point's own figures, and the cost-aware points stay within them
    assert num["target_cycles"] == num["ratio_matrix_cycles"] < num["dense_cycles"] == num["unstructured_cycles"]
    assert num["cost_matrix_cycles"] <= num["target_cycles"]
    assert num["target_energy_uj"] == num["ratio_matrix_energy_uj"] < num["dense_energy_uj"]
    assert num["energy_matrix_energy_uj"] <= num["target_energy_uj"]
    assert all(0 < num[k] <= 1 for k in num if k.endswith("accuracy"))
