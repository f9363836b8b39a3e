"""The accelerate configs load, say what the README says, and fit the recipes they are meant for."""

import pytest
from accelerate.commands.config.config_args import load_config_from_file

from eeve_sft.errors import UserError
from eeve_sft.recipe import check_for_training, parse_recipe
from helpers import REPO

CONFIGS = REPO / "accelerate_configs"


@pytest.mark.parametrize(
    "name, distributed, zero_stage",
    [("single_gpu", "NO", None), ("multi_gpu", "MULTI_GPU", None), ("deepspeed_zero2", "DEEPSPEED", 2),
     ("deepspeed_zero3", "DEEPSPEED", 3)],
)
def test_config_loads_with_accelerate(name, distributed, zero_stage):
    config = load_config_from_file(str(CONFIGS / f"{name}.yaml"))
    assert config.distributed_type.name == distributed
    assert config.mixed_precision == "bf16"
    if zero_stage is not None:
        assert config.deepspeed_config["zero_stage"] == zero_stage
        assert config.deepspeed_config["offload_param_device"] == "none"


def test_zero3_recipe_stores_4bit_weights_as_bf16():
    recipe = parse_recipe(REPO / "recipes/eeve_banmal_zero3.yaml", check_device=False)
    assert recipe.model.load_in_4bit and recipe.model.bnb_4bit_quant_storage == "bfloat16"
    assert recipe.model.dtype == "bfloat16"  # ZeRO-3 shards one dtype: storage, compute and the rest agree
    config = load_config_from_file(str(CONFIGS / "deepspeed_zero3.yaml"))
    assert config.deepspeed_config["zero3_init_flag"] is True


def test_qlora_without_bf16_storage_is_refused_under_zero3(monkeypatch):
    default, zero3, bf16 = (parse_recipe(REPO / f"recipes/{name}.yaml", check_device=False)
                            for name in ("eeve_banmal_original", "eeve_banmal_zero3", "eeve_banmal_bf16"))
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")  # what `accelerate launch` sets for a DeepSpeed config
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    with pytest.raises(UserError, match="bnb_4bit_quant_storage: bfloat16"):
        check_for_training(default)
    check_for_training(zero3)
    check_for_training(bf16)
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    check_for_training(default)


def test_every_readme_launch_command_names_existing_files():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for name in ("single_gpu", "multi_gpu", "deepspeed_zero2", "deepspeed_zero3"):
        assert f"--config_file accelerate_configs/{name}.yaml" in readme
    for line in readme.splitlines():
        if "accelerate launch --config_file" in line:
            for token in line.replace("`", " ").split():
                if token.startswith(("accelerate_configs/", "recipes/")):
                    assert (REPO / token).is_file(), token
