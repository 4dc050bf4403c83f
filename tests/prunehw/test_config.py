import pytest

from prunehw.core.config import RunConfig, VariantConfig, load_config
from prunehw.core.errors import ConfigError


def test_defaults_round_trip():
    cfg = load_config(None)
    assert RunConfig.from_toml_dict(cfg.to_toml_dict()) == cfg
    assert [v.name for v in cfg.variants] == ["unstructured-0.90", "matrix-0.80"]


def test_shipped_configs_load():
    for name in ("default", "quick"):
        cfg = load_config(f"configs/{name}.toml")
        assert cfg.name == name


@pytest.mark.parametrize("toml, message", [
    ('[train]\nepoch = 3', "[train] unknown key 'epoch'"),
    ('[train]\nepochs = "3"', "train.epochs must be an integer"),
    ('[train]\nepochs = 0', "train.epochs = 0 must be > 0"),
    ('[prune]\nscope = "everywhere"', "prune.scope = 'everywhere' is unknown"),
    ('[[variants]]\nmethod = "unstructured"\nratio = 1.0', "ratio = 1.0 is out of range"),
    ('[[variants]]\nmethod = "unstructured"\nratio = -0.1', "ratio = -0.1 is out of range"),
    ('[[variants]]\nmethod = "random"\nratio = 0.5', "variant method = 'random' is unknown"),
    ('[network]\nlayers = [{type = "batchnorm"}]', "network layer type = 'batchnorm' is unknown; allowed: conv2d"),
    ('[network]\nlayers = [{type = "dense"}]', "network layer 'dense' needs 'units'"),
    ('[network]\nlayers = [{type = "dense", units = 10, kernel = 3}]', "does not take 'kernel'"),
    ('[network]\nlayers = [{type = "relu"}]', "the last layer must be dense"),
    ('[hardware]\nx = 1', "unknown section 'hardware'"),
    ('[prune]\nlayer_ratios = { conv1 = 1.5 }', "prune.layer_ratios.conv1 = 1.5 is out of range"),
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
    assert VariantConfig("matrix", 0.8).name == "matrix-0.80"
    with pytest.raises(ConfigError, match="listed twice"):
        RunConfig(variants=(VariantConfig("matrix", 0.8), VariantConfig("matrix", 0.8, criterion="l2")))


def test_unstructured_refuses_structure_criteria():
    with pytest.raises(ConfigError, match="for matrix pruning"):
        VariantConfig("unstructured", 0.5, criterion="taylor")


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
