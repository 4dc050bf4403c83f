import keras
import numpy as np
import pytest

from prunehw.core.config import NetworkConfig, LayerSpec
from prunehw.core.errors import ConfigError
from prunehw.model.network import build_model, prunable_layers, set_seed
from prunehw.model.prune import apply_masks, keep_masks, magnitude_masks, measured_ratio, prune_unstructured
from prunehw.model.pruning_schedule import PruningSchedule
from prunehw.model.train import fit


def _kernels(rng):
    return {"a": rng.normal(size=(9, 16)), "b": rng.normal(size=(144, 32)), "c": rng.normal(size=(50, 10))}


@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.5, 0.9, 0.99])
@pytest.mark.parametrize("scope", ["global", "per_layer"])
def test_masks_remove_exact_ratio(rng, ratio, scope):
    k = _kernels(rng)
    masks = magnitude_masks(k, ratio, scope)
    total = sum(v.size for v in k.values())
    removed = sum((~m).sum() for m in masks.values())
    if scope == "global":
        assert removed == round(ratio * total)
    else:
        for name, m in masks.items():
            assert (~m).sum() == round(ratio * k[name].size)


def test_masks_remove_smallest_magnitudes(rng):
    k = _kernels(rng)
    masks = magnitude_masks(k, 0.7, "global")
    kept = np.concatenate([np.abs(k[n])[masks[n]] for n in k])
    gone = np.concatenate([np.abs(k[n])[~masks[n]] for n in k])
    assert gone.max() <= kept.min()


def test_layer_ratios_override(rng):
    k = _kernels(rng)
    masks = magnitude_masks(k, 0.5, "per_layer", {"a": 0.25})
    assert (~masks["a"]).sum() == round(0.25 * 144) and (~masks["b"]).sum() == round(0.5 * 144 * 32)
    with pytest.raises(ConfigError, match="names layer 'zz'"):
        magnitude_masks(k, 0.5, "per_layer", {"zz": 0.1})


def test_ratio_out_of_range(rng):
    for bad in (1.0, -0.01, 1.5):
        with pytest.raises(ConfigError, match="out of range"):
            magnitude_masks(_kernels(rng), bad)


def test_schedules_share_the_budget():
    one = PruningSchedule("oneshot", 0.9, 4, 3).plan()
    it = PruningSchedule("iterative", 0.9, 4, 3).plan()
    assert one == [(0.9, 12)]
    assert sum(e for _, e in it) == 12
    ratios = [r for r, _ in it]
    assert ratios == sorted(ratios) and ratios[-1] == pytest.approx(0.9)
    assert PruningSchedule.from_config(PruningSchedule("iterative", 0.5, 2, 1).get_config()).plan()[-1][0] == 0.5


def _small_net(data):
    cfg = NetworkConfig(layers=(LayerSpec(type="conv2d", filters=4, kernel=3), LayerSpec(type="relu"),
                                LayerSpec(type="maxpool2d", pool=2), LayerSpec(type="flatten"),
                                LayerSpec(type="dense", units=16), LayerSpec(type="relu"),
                                LayerSpec(type="dense", units=10)))
    return build_model(cfg, data.input_shape, 10, seed=3)


def test_masks_survive_fine_tuning(tiny_data):
    model = _small_net(tiny_data)
    kernels = {l.name: l.kernel.numpy() for l in prunable_layers(model)}
    masks = magnitude_masks(kernels, 0.8)
    apply_masks(model, masks)
    before = {l.name: l.kernel.numpy().copy() for l in prunable_layers(model)}
    with keep_masks(model, masks):
        fit(model, tiny_data, 1, 64, 1e-3, desc="test")
    for layer in prunable_layers(model):
        k = layer.kernel.numpy()
        assert np.all(k[~masks[layer.name]] == 0.0), f"pruned weights of {layer.name} came back"
        assert not np.array_equal(k, before[layer.name]), "fine-tuning changed nothing"
        assert layer.kernel.constraint is None, "the mask constraint outlived its block"
    assert measured_ratio(model) == pytest.approx(0.8, abs=1e-4)


class _ZeroAfterEachBatch(keras.callbacks.Callback):
    """The reference: re-zero pruned weights from Python after every batch."""

    def __init__(self, masks):
        super().__init__()
        self.masks = masks

    def on_train_batch_end(self, batch, logs=None):
        apply_masks(self.model, self.masks)


def test_in_graph_masking_with_many_steps_per_call_equals_masking_after_each_batch(tiny_data, monkeypatch):
    import prunehw.model.train as train

    masks = magnitude_masks({l.name: l.kernel.numpy() for l in prunable_layers(_small_net(tiny_data))}, 0.7)
    runs = []
    for steps, in_graph in ((1, False), (train.STEPS_PER_EXECUTION, True)):
        monkeypatch.setattr(train, "STEPS_PER_EXECUTION", steps)
        model = _small_net(tiny_data)
        apply_masks(model, masks)
        set_seed(5)
        if in_graph:
            with keep_masks(model, masks):
                fit(model, tiny_data, 1, 64, 1e-3, desc="test")
        else:
            fit(model, tiny_data, 1, 64, 1e-3, desc="test", callbacks=[_ZeroAfterEachBatch(masks)])
        runs.append(model.get_weights())
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_iterative_pruning_reaches_ratio_and_keeps_pruned_weights(tiny_data):
    model = _small_net(tiny_data)
    model, masks = prune_unstructured(model, tiny_data, PruningSchedule("iterative", 0.75, 3, 1), scope="global",
                                      layer_ratios=None, learning_rate=1e-3, batch_size=64)
    total = sum(m.size for m in masks.values())
    assert measured_ratio(model) == pytest.approx(round(0.75 * total) / total)
