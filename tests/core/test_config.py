from pathlib import Path

import pytest

from prunehw.core.config import LayerSpec, QuantConfig, RunConfig, TrainConfig, VariantConfig, load_config
from prunehw.core.errors import ConfigError


def test_defaults_round_trip():
    cfg = load_config(None)
    assert RunConfig.from_toml_dict(cfg.to_toml_dict()) == cfg
    assert [v.name for v in cfg.variants] == ["unstructured-0.90", "matrix-0.80", "matrix-0.80-w4-qat"]


def test_shipped_configs_load():
    for name in ("default", "quick"):
        cfg = load_config(f"configs/{name}.toml")
        assert cfg.name == name
    # one set of defaults: the built-in ones are configs/default.toml, every key of it (a plain `prunehw train` after
    # `make sim` finds its stages up to date)
    assert load_config("configs/default.toml") == load_config(None)


def test_paths_in_a_config_are_taken_from_its_folder(tmp_path, monkeypatch):
    """A config means the same wherever it is run from; paths given on the command line (overrides) are the
    working directory's."""
    (tmp_path / "cfg").mkdir()
    path = tmp_path / "cfg" / "c.toml"
    path.write_text('[run]\nbuild_dir = "../out"\nmodel = "m.keras"\n[data]\nsource = "../in/good.npz"\n')
    monkeypatch.chdir(tmp_path / "cfg")
    for where in (path, "c.toml"):
        cfg = load_config(where)
        folder = path.parent if where == path else Path(".")
        assert Path(cfg.build_dir).resolve() == (tmp_path / "out").resolve()
        assert Path(cfg.data.source).resolve() == (tmp_path / "in" / "good.npz").resolve()
        assert Path(cfg.model).resolve() == (folder / "m.keras").resolve()
    assert load_config("c.toml", overrides={"model": "x.keras"}).model == "x.keras"
    assert load_config(path).data.replace(source="mnist").source == "mnist"
    # "mnist" names the built-in data set, not a file beside the config
    path.write_text('[data]\nsource = "mnist"\n')
    assert load_config(path).data.source == "mnist"


@pytest.mark.parametrize("toml, message", [
    ('[train]\nepoch = 3', "[train] unknown key 'epoch'"),
    ('[train]\nepochs = "3"', "train.epochs must be an integer"),
    ('[train]\nepochs = 0', "train.epochs = 0 must be > 0"),
    ('[prune]\nscope = "everywhere"', "prune.scope = 'everywhere' is unknown"),
    ('[[variants]]\nmethod = "unstructured"\nratio = 1.0', "ratio = 1.0 is out of range"),
    ('[[variants]]\nmethod = "unstructured"\nratio = -0.1', "ratio = -0.1 is out of range"),
    ('[[variants]]\nmethod = "random"\nratio = 0.5', "variants[0].method = 'random' is unknown; allowed: dense, unstructured, matrix"),
    ('[[variants]]\nratio = 0.5', "variants[0].method is missing"),
    ('[network]\nlayers = [{type = "batchnorm"}]',
     "network.layers[0].type = 'batchnorm' is unknown; allowed: conv2d, depthwise2d, dense, relu, relu6, maxpool2d, avgpool2d, flatten"),
    ('[network]\nlayers = [{type = "dense"}]', "network.layers[0]: a 'dense' layer needs 'units'"),
    ('[network]\nlayers = [{type = "dense", units = 10, kernel = 3}]',
     "network.layers[0]: a 'dense' layer does not take 'kernel'; it takes: units"),
    ('[network]\nlayers = [{type = "flatten"}, {type = "dense", unit = 10}]',
     "[network.layers[1]] unknown key 'unit'; allowed: type, name, filters, kernel, units, pool, stride, padding"),
    ('[network]\nlayers = [{type = "conv2d", filters = 2, kernel = 3, padding = "full"}, {type = "flatten"}, {type = "dense", units = 2}]',
     "network.layers[0].padding = 'full' is unknown; allowed: valid, same"),
    ('[network]\nlayers = [{type = "conv2d", filters = 2, kernel = 3, stride = 0}, {type = "flatten"}, {type = "dense", units = 2}]',
     "network.layers[0].stride = 0 must be > 0"),
    ('[network]\nlayers = [{type = "flatten"}, {type = "dense", units = 10, stride = 2}]',
     "network.layers[1]: a 'dense' layer does not take 'stride'; it takes: units"),
    ('[network]\nlayers = [{type = "maxpool2d", pool = 2, padding = "same"}, {type = "flatten"}, {type = "dense", units = 2}]',
     "network.layers[0]: a 'maxpool2d' layer does not take 'padding'; it takes: pool"),
    ('[network]\nlayers = [{type = "avgpool2d", pool = [3, 2, 1]}, {type = "flatten"}, {type = "dense", units = 2}]',
     "network.layers[0].pool: [3, 2, 1] is not a [height, width] pair of positive integers; allowed: n (the same both ways) or [height, width]"),
    ('[network]\nlayers = [{type = "conv2d", filters = 2, kernel = [3, 0]}, {type = "flatten"}, {type = "dense", units = 2}]',
     "network.layers[0].kernel: [3, 0] is not a [height, width] pair of positive integers"),
    ('[network]\nlayers = [{type = "avgpool2d"}, {type = "flatten"}, {type = "dense", units = 2}]',
     "network.layers[0]: a 'avgpool2d' layer needs 'pool'"),
    ('[network]\nlayers = [{type = "flatten"}, {type = "dense", units = 0}]', "network.layers[1].units = 0 must be > 0"),
    ('[network]\nlayers = [{type = "relu"}]', "the last layer must be dense"),
    ('[hardware]\nx = 1', "unknown section 'hardware'"),
    ('[prune]\nlayer_ratios = { conv1 = 1.5 }', "prune.layer_ratios.conv1 = 1.5 is out of range"),
    # strict types: a bool is not an integer or a number, an integer is not a bool, a float is not an integer
    ('[train]\nepochs = true', "train.epochs must be an integer, got bool True"),
    ('[train]\nlearning_rate = true', "train.learning_rate must be a number, got bool True"),
    ('[experiments]\npeer = 1', "experiments.peer must be true or false, got int 1"),
    ('[sim]\nworkers = 2.0', "sim.workers must be an integer, got float 2.0"),
    ('[quant]\nweight_bits = 9', "quant.weight_bits = 9; allowed: integers 2..8"),
    ('[experiments]\nratios = []', "experiments.ratios must be a non-empty list"),
    ('[experiments]\nratios = [0.5, true]', "experiments.ratios[1] must be a number, got bool True"),
    ('[run]\nname = "a/b"', "run.name = 'a/b'; allowed: a plain folder name"),
    ('[run]\nseeds = 1', "[run] unknown key 'seeds'; allowed: name, seed, build_dir, model"),
    ('[array]\ndataflow = "rs"', "array.dataflow = 'rs' is not built; allowed: ws (weight-stationary)"),
    # output-stationary is not built: refused with the config, not at the rtl stage after training
    ('[array]\ndataflow = "os"', "array.dataflow = 'os' is not built; allowed: ws (weight-stationary)"),
    ('train = 3', "train must be a table, got int 3"),
    ('not toml at all [', "is not valid TOML"),
])
def test_bad_config_is_one_clear_line(tmp_path, toml, message):
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_variant_names_and_duplicates():
    assert VariantConfig(method="matrix", ratio=0.8).name == "matrix-0.80"
    with pytest.raises(ConfigError, match="variants: 'matrix-0.80' is listed twice"):
        RunConfig(variants=(VariantConfig(method="matrix", ratio=0.8),
                            VariantConfig(method="matrix", ratio=0.8, criterion="l2")))


def test_hardware_targets_name_the_variant_and_exclude_a_ratio():
    """A matrix variant is pruned to a ratio, a cycle target or an energy target: exactly one, named in its name
    and kept in its dict; unstructured pruning removes no tiles, so it takes no hardware target."""
    c = VariantConfig(method="matrix", target_cycles=2900)
    e = VariantConfig(method="matrix", target_energy_uj=0.4)
    assert (c.name, c.target, e.name, e.target) == ("matrix-c2900", ("target_cycles", 2900), "matrix-e0.4",
                                                    ("target_energy_uj", 0.4))
    assert e.to_dict() == {**{k: v for k, v in e.to_dict().items() if k != "target_energy_uj"}, "target_energy_uj": 0.4}
    assert "ratio" not in e.to_dict() and "target_cycles" not in e.to_dict()
    assert VariantConfig(method="matrix", ratio=0.8).target is None
    assert VariantConfig(method="matrix", target_images_per_s=40000).name == "matrix-ips40000"
    assert VariantConfig(method="matrix", target_cycles=1234567).name == "matrix-c1234567"
    with pytest.raises(ConfigError, match="give one of ratio .* not ratio and target_energy_uj"):
        VariantConfig(method="matrix", ratio=0.8, target_energy_uj=0.4)
    with pytest.raises(ConfigError, match="give one of ratio"):
        VariantConfig(method="matrix")
    with pytest.raises(ConfigError, match="target_energy_uj prunes whole array tiles; allowed with method \"matrix\""):
        VariantConfig(method="unstructured", target_energy_uj=0.4)


def test_unstructured_refuses_structure_criteria():
    with pytest.raises(ConfigError, match="criterion 'taylor' is for matrix pruning; unstructured allows: l1, l2"):
        VariantConfig(method="unstructured", ratio=0.5, criterion="taylor")


def test_an_integer_is_a_number_and_lists_are_tuples(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[train]\nlearning_rate = 1\n[experiments]\nratios = [0, 0.5]\n[synth]\ntarget_mhz = 50\n")
    cfg = load_config(path)
    assert cfg.train.learning_rate == 1.0 and isinstance(cfg.train.learning_rate, float)
    assert cfg.experiments.ratios == (0.0, 0.5) and all(isinstance(r, float) for r in cfg.experiments.ratios)
    assert cfg.synth.target_mhz == 50.0 and isinstance(cfg.synth.target_mhz, float)
    # the same values written as floats give the same cache keys
    path.write_text("[train]\nlearning_rate = 1.0\n[experiments]\nratios = [0.0, 0.5]\n[synth]\ntarget_mhz = 50.0\n")
    assert load_config(path).key("train", "experiments", "synth") == cfg.key("train", "experiments", "synth")


@pytest.mark.parametrize("make, message", [
    (lambda: VariantConfig(method="matrix", ratio=1.5), "variant.ratio = 1.5 is out of range; allowed: 0 <= ratio < 1"),
    (lambda: VariantConfig(method="matrix", ratio=True), "variant.ratio must be a number, got bool True"),
    (lambda: LayerSpec(type="dense"), "layer: a 'dense' layer needs 'units'"),
    (lambda: QuantConfig(weight_bits=1), "quant.weight_bits = 1; allowed: integers 2..8"),
    (lambda: TrainConfig(epochs=True), "train.epochs must be an integer, got bool True"),
    (lambda: RunConfig(trian={}), "[run] unknown key 'trian'; allowed: name, seed"),
    (lambda: load_config(None).replace(name=".hidden"), "run.name = '.hidden'; allowed: a plain folder name"),
    (lambda: load_config(None).replace(train=3), "train must be a table, got int 3"),
    (lambda: load_config(None).replace(train={"epochs": 0}), "train.epochs = 0 must be > 0"),
    (lambda: load_config(None).array.replace(rows=0), "array.rows = 0 must be > 0"),
    (lambda: load_config(None, overrides={"model": "net.h5"}), "run.model = 'net.h5'; allowed: a .keras file"),
])
def test_constructions_and_replacements_are_validated_too(make, message):
    """Code that builds or changes a config gets the same one-line ConfigError as a file, never pydantic's error."""
    with pytest.raises(ConfigError) as exc:
        make()
    assert message in str(exc.value) and "\n" not in str(exc.value)
    assert type(exc.value) is ConfigError and exc.value.__cause__ is None


def test_configs_are_frozen_and_replace_makes_a_copy():
    cfg = load_config(None)
    with pytest.raises(AttributeError, match="frozen"):
        cfg.seed = 1
    other = cfg.replace(seed=cfg.seed + 1, array=cfg.array.replace(rows=4))
    assert (other.seed, other.array.rows, cfg.array.rows) == (cfg.seed + 1, 4, 8)
    assert other.variants == cfg.variants and hash(other.variants[0]) == hash(cfg.variants[0])


#: the stage keys of the default config (configs/default.toml, since the built-in defaults became its values; the
#: others measured before the move to pydantic): a `make sim` run's cached stages stay valid
DEFAULT_KEYS = {
    "data": "fb1f023927de161e", "network": "bc1bd2e1d0c10846", "train": "e5183b2a2f100e34",
    "prune": "e98b91f6192b5513", "array": "3f88d14ea0e9fad0", "quant": "0ee76cb128b4352c",
    "sim": "905fe472462bfa01", "synth": "ff60a977ff33d145", "experiments": "59a02dc943e9d608",
    "variants": "32e3e8d1a6fdb269",
}


def test_default_stage_keys_are_unchanged():
    cfg = load_config(None)
    assert {s: cfg.key(s) for s in DEFAULT_KEYS} == DEFAULT_KEYS
    assert cfg.key("data", "network", "train") == "de01c4edfe4216e7"
    assert cfg.key("prune", "array") == "283af221c1c78a22"
    quick = load_config("configs/quick.toml")
    assert (quick.key("data", "network", "train"), quick.key("prune", "quant")) == ("e93587599bee3815", "64353ace8315f266")


def test_conv_stride_and_padding_default_and_stay_out_of_the_keys():
    """stride 1 and valid padding are what a conv without them means: equal specs, equal cache keys, nothing written;
    other values are written, kept through the file, and change the key."""
    plain = LayerSpec(type="conv2d", filters=4, kernel=3)
    explicit = LayerSpec(type="conv2d", filters=4, kernel=3, stride=1, padding="valid")
    assert (plain.stride, plain.padding) == (1, "valid") and plain == explicit
    assert "stride" not in plain.to_dict() and "padding" not in explicit.to_dict()
    assert LayerSpec(type="relu").stride is None and "stride" not in LayerSpec(type="relu").to_dict()
    strided = plain.replace(stride=2, padding="same")
    assert strided.to_dict()["stride"] == 2 and strided.to_dict()["padding"] == "same"
    base = load_config(None)
    first, rest = base.network.layers[0], base.network.layers[1:]

    def with_first(layer):
        return base.replace(network=base.network.replace(layers=(layer, *rest)))

    assert with_first(first.replace(stride=1, padding="valid")).key("network") == base.key("network")
    cfg = with_first(first.replace(padding="same"))
    assert cfg.key("network") != base.key("network") != with_first(first.replace(stride=2)).key("network")
    assert RunConfig.from_toml_dict(cfg.to_toml_dict()) == cfg


def test_cache_key_depends_on_section_and_seed():
    a = load_config(None)
    b = RunConfig(seed=a.seed + 1)
    assert a.key("train") != b.key("train")
    assert a.key("train") == RunConfig().key("train")


def test_timing_verdicts_need_every_run_beyond_the_tolerance():
    """Claim 4 once flipped between runs on one noisy measurement: a verdict now needs the whole spread to agree."""
    from prunehw.claims import timing_verdict

    dense = [0.40, 0.42, 0.44]
    assert timing_verdict(dense, [0.30, 0.31, 0.33], 0.10) == "faster"
    assert timing_verdict(dense, [0.30, 0.31, 0.43], 0.10) == "same"     # one slow run overlaps dense
    assert timing_verdict(dense, [0.37, 0.37, 0.37], 0.10) == "same"     # faster, but within the tolerance
    assert timing_verdict(dense, [0.50, 0.55, 0.60], 0.10) == "slower"


def test_a_rate_target_is_a_cycle_target_at_the_clock_the_design_is_built_for():
    from prunehw.variants import cycles_for_rate

    cfg = RunConfig()
    assert cfg.synth.target_mhz == 100.0
    assert cycles_for_rate(40000, cfg) == 2500 and cycles_for_rate(30000, cfg) == 3333
    assert cycles_for_rate(30000, cfg.replace(synth={"target_mhz": 50.0})) == 1666
