import json

import pytest

from mnist_diffusion.config import ConfigError, RunConfig, apply_overrides, load_run_config
from mnist_diffusion.errors import UserError
from mnist_diffusion.recipes import RECIPES, get_recipe


def test_every_recipe_round_trips_through_json():
    for cfg in RECIPES.values():
        assert load_run_config(json.loads(cfg.to_json())) == cfg


def test_unknown_key_is_named():
    data = get_recipe("seed").to_dict()
    data["train"]["learning_rate"] = 0.1
    with pytest.raises(ConfigError, match=r"train\.learning_rate"):
        load_run_config(data, "my.json")


def test_wrong_type_is_named():
    data = get_recipe("seed").to_dict()
    data["train"]["epochs"] = "three"
    with pytest.raises(ConfigError, match=r"train\.epochs must be an integer"):
        load_run_config(data)


def test_overrides_are_typed_and_checked():
    cfg = apply_overrides(get_recipe("ddpm"), ["train.lr=2e-4", "model.channels=[16,32,32]", "sample.sampler=ddim"])
    assert cfg.train.lr == 2e-4 and cfg.model.channels == (16, 32, 32) and cfg.sample.sampler == "ddim"
    with pytest.raises(ConfigError, match="unknown setting 'train.lrr'"):
        apply_overrides(cfg, ["train.lrr=1"])
    with pytest.raises(ConfigError, match="diffusion.schedule is 'quadratic'"):
        apply_overrides(cfg, ["diffusion.schedule=quadratic"])
    with pytest.raises(ConfigError, match="section.key=value"):
        apply_overrides(cfg, ["nonsense"])


def test_other_format_version_is_refused():
    data = RunConfig().to_dict()
    data["format_version"] = 99
    with pytest.raises(ConfigError, match="format_version 99"):
        load_run_config(data, "old.json")


def test_unknown_recipe():
    with pytest.raises(UserError, match="Unknown recipe 'sd'; choose one of: seed"):
        get_recipe("sd")


@pytest.mark.parametrize(
    "section, key, successor", [("model", "attention_7x7", "mid_attention"), ("train", "bf16", "precision")]
)
def test_a_file_an_earlier_version_wrote_is_refused_with_one_sentence(section, key, successor):
    data = get_recipe("ddpm").to_dict()
    data[section][key] = data[section].pop(successor)
    with pytest.raises(
        ConfigError,
        match=rf"old\.json was written by a development version of mnist-diffusion "
        rf"0\.1\.0 \(its {section}\.{key} is now {section}\.{successor}\)",
    ):
        load_run_config(data, "old.json")


def test_a_bad_guidance_interval_is_refused_on_load():
    data = get_recipe("ddpm").to_dict()
    data["sample"]["guidance_interval"] = [5, 1]
    with pytest.raises(ConfigError, match="LOW < HIGH, got 5,1"):
        load_run_config(data)
