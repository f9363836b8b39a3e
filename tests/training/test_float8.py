"""FP8 base projections (recipe key float8_base): the bf16 products within FP8 rounding, the input gradient only,
the bf16 weights dropped, and inside the fused LoRA projection the same FP8 products PEFT's forward would run.
torch computes the FP8 products on a CPU itself, so these run the code a GPU runs."""

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from eeve_sft.errors import UserError
from eeve_sft.training.float8 import PROJECTIONS, Float8BaseLinear, convert_lora_base_layers, self_check
from eeve_sft.training.fused_lora import enable_fused_lora
from helpers import REPO

pytest.importorskip("torchao")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_products_match_the_bf16_linear_within_fp8_rounding(seed):
    torch.manual_seed(seed)
    base = torch.nn.Linear(64, 96, bias=False).to(torch.bfloat16)
    errors = self_check(base, tokens=48, seed=seed)
    # e4m3 (3 mantissa bits) forward, e5m2 (2 bits) gradients: a few percent, never exact, never off by much.
    assert 1e-3 < errors["output_rel_err"] < 0.08
    assert 1e-3 < errors["grad_input_rel_err"] < 0.12


def test_the_layer_computes_the_input_gradient_and_no_weight_gradient():
    layer = Float8BaseLinear(torch.nn.Linear(32, 48, bias=False).requires_grad_(False))
    assert layer.weight.dtype == torch.float8_e4m3fn and not list(layer.parameters())
    x = torch.randn(5, 32, requires_grad=True)
    out = layer(x)
    assert out.shape == (5, 48) and out.dtype == torch.float32
    out.sum().backward()
    assert x.grad.shape == (5, 32) and x.grad.abs().sum() > 0


def tiny_lora_llama(intermediate: int):
    config = LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=intermediate,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=list(PROJECTIONS), init_lora_weights=False)
    return get_peft_model(model, lora)


def test_only_frozen_lora_projections_with_fp8_shapes_convert_and_their_bf16_weights_go():
    model = tiny_lora_llama(intermediate=120)
    # 120 is not a multiple of 16: gate/up (64 -> 120) and down (120 -> 64) stay bf16; the 4 attention ones convert.
    assert convert_lora_base_layers(model) == 4
    layer = model.base_model.model.model.layers[0]
    assert isinstance(layer.self_attn.q_proj.base_layer, Float8BaseLinear)
    assert isinstance(layer.mlp.down_proj.base_layer, torch.nn.Linear)
    assert not isinstance(model.base_model.model.lm_head, Float8BaseLinear)
    names = [n for n, _ in model.named_parameters()]
    assert not any("self_attn.q_proj.base_layer" in n for n in names)
    assert any("mlp.down_proj.base_layer.weight" in n for n in names)
    ids = torch.randint(0, 128, (2, 8))
    model(input_ids=ids, labels=ids).loss.backward()
    lora_grads = [p.grad for n, p in model.named_parameters() if "lora_" in n]
    assert lora_grads and all(g is not None and g.abs().sum() > 0 for g in lora_grads)


class Projection(torch.nn.Module):
    def __init__(self, n_in, n_out):
        super().__init__()
        self.q_proj = torch.nn.Linear(n_in, n_out, bias=False)

    def forward(self, x):
        return self.q_proj(x)


@pytest.mark.parametrize("last", [(), ("q_proj",)])  # base product inside the LoRA node, or after it
def test_the_fused_projection_runs_the_same_fp8_products_as_peft_forward(last):
    """One float32 projection: the FP8 products see the same inputs either way, so only LoRA's arithmetic differs."""
    torch.manual_seed(1)
    block = Projection(48, 80)
    config = LoraConfig(r=4, lora_alpha=12, target_modules=["q_proj"], init_lora_weights=False)
    peft_model = get_peft_model(block, config)
    assert convert_lora_base_layers(peft_model) == 1
    fused = copy.deepcopy(peft_model)
    assert enable_fused_lora(fused, last_projections=last) == 1
    x = torch.randn(3, 7, 48)

    def grads(model):
        xi = x.clone().requires_grad_(True)
        out = model(xi)
        (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
        return out.detach(), xi.grad, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    (ref_out, ref_dx, ref_g), (out, dx, g) = grads(peft_model), grads(fused)
    for a, b in [(out, ref_out), (dx, ref_dx)] + [(g[n], ref_g[n]) for n in ref_g]:
        assert ((a - b).norm() / b.norm()) < 1e-5
    assert sorted(g) == sorted(ref_g) and len(g) == 2


def test_the_training_assembly_converts_the_bases_when_the_recipe_says(tmp_path, monkeypatch):
    from eeve_sft.training.assembly import build_trainer, prepare_data
    from eeve_sft.training.modeling import tokenizer_for_recipe
    from eeve_sft.training.recipe import check_for_training, parse_recipe

    monkeypatch.chdir(REPO)
    flags = ["--output_dir", str(tmp_path / "run"), "--float8_base", "true", "--eval_strategy", "no"]
    recipe = parse_recipe(REPO / "recipes/demo_cpu.yaml", flags)
    check_for_training(recipe)  # on a CPU torch computes the FP8 products itself
    tokenizer = tokenizer_for_recipe(recipe)
    trainer = build_trainer(recipe, tokenizer, prepare_data(recipe, tokenizer, names=["train"], limit=4))
    bases = [m for m in trainer.model.modules() if isinstance(m, Float8BaseLinear)]
    routed = [m for m in trainer.model.modules() if getattr(m, "_eeve_fused_lora", False)]
    assert bases and len(routed) == len(bases)  # the demo recipe fuses its projections: the FP8 bases go in there


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--load_in_4bit", "true"], "float8_base: true is for LoRA on an unquantized model"),
        (["--use_peft", "false", "--fused_lora", "false"], "float8_base: true is for LoRA on an unquantized model"),
    ],
)
def test_recipes_that_cannot_hold_fp8_bases_are_refused(flags, message, tmp_path):
    from eeve_sft.training.recipe import check_for_training, parse_recipe

    argv = ["--output_dir", str(tmp_path / "run"), "--float8_base", "true", *flags]
    recipe = parse_recipe(REPO / "recipes/demo_cpu.yaml", argv)
    with pytest.raises(UserError, match=message):
        check_for_training(recipe)
