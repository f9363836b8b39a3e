"""The accelerate configs load, do what the documentation says, and fit the recipes they are meant for."""

import pytest
from accelerate.commands.config.config_args import load_config_from_file

from eeve_sft.errors import UserError
from eeve_sft.training.recipe import check_for_training, parse_recipe
from helpers import REPO

CONFIGS = REPO / "accelerate_configs"


@pytest.mark.parametrize(
    "name, distributed, zero_stage",
    [
        ("single_gpu", "NO", None),
        ("multi_gpu", "MULTI_GPU", None),
        ("deepspeed_zero2", "DEEPSPEED", 2),
        ("deepspeed_zero3", "DEEPSPEED", 3),
    ],
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
    default, zero3, bf16 = (
        parse_recipe(REPO / f"recipes/{name}.yaml", check_device=False)
        for name in ("eeve_banmal_original", "eeve_banmal_zero3", "eeve_banmal_bf16")
    )
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")  # what `accelerate launch` sets for a DeepSpeed config
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    with pytest.raises(UserError, match="bnb_4bit_quant_storage: bfloat16"):
        check_for_training(default)
    check_for_training(zero3)
    check_for_training(bf16)
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    check_for_training(default)


def documentation() -> str:
    """README and the reference pages behind it, where the launch commands are written down."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    return "\n".join(page.read_text(encoding="utf-8") for page in pages)


def test_every_documented_launch_command_names_existing_files():
    readme = documentation()
    for name in ("single_gpu", "multi_gpu", "deepspeed_zero2", "deepspeed_zero3"):
        assert f"--config_file accelerate_configs/{name}.yaml" in readme
    for line in readme.splitlines():
        if "accelerate launch --config_file" in line:
            for token in line.replace("`", " ").split():
                if token.startswith(("accelerate_configs/", "recipes/")):
                    assert (REPO / token).is_file(), token


@pytest.mark.parametrize(
    "name, single_node",
    [("multi_node_ddp", "multi_gpu"), ("multi_node_zero2", "deepspeed_zero2"), ("multi_node_zero3", "deepspeed_zero3")],
)
def test_multi_node_configs_differ_from_their_single_node_config_only_in_the_machines(name, single_node):
    config = load_config_from_file(str(CONFIGS / f"{name}.yaml"))
    single = load_config_from_file(str(CONFIGS / f"{single_node}.yaml"))
    assert config.num_machines == 2 and config.num_processes == 16 and config.machine_rank == 0
    assert config.main_process_ip is None  # each cluster's own: given as a flag
    assert config.distributed_type == single.distributed_type and config.mixed_precision == single.mixed_precision
    assert config.deepspeed_config == single.deepspeed_config
    if config.deepspeed_config:  # one accelerate launch per machine, no ssh/pdsh
        assert config.deepspeed_config["deepspeed_multinode_launcher"] == "standard"


def test_documented_multi_node_commands_pass_what_accelerate_reads_only_from_flags():
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    readme = documentation()
    commands = [line for line in readme.splitlines() if "multi_node_" in line and line.startswith("accelerate launch")]
    assert [("--machine_rank 0" in c, "--machine_rank 1" in c) for c in commands] == [(True, False), (False, True)]
    for command in commands:
        args = launch_command_parser().parse_args(command.split()[2:])
        args, _, _ = _validate_launch_command(args)
        assert (args.num_machines, args.num_processes, args.main_process_ip) == (2, 16, "10.0.0.1")
        assert args.rdzv_backend == "static" and args.same_network is True
