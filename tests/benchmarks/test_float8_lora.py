"""The FP8 base-matmul lever (benchmarks/float8_lora.py): same function as the bf16 linear within FP8 rounding, input
gradient only, and nothing swapped that it does not apply to. On CPU torchao emulates the scaled matmul."""

import importlib.util
import sys

import pytest
import torch

from helpers import REPO

pytest.importorskip("torchao")  # pip install -e ".[fp8]"


def fp8():
    spec = importlib.util.spec_from_file_location("float8_lora", REPO / "benchmarks/float8_lora.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("float8_lora", module)
    spec.loader.exec_module(module)
    return module


def emulated():
    from torchao.float8.config import Float8LinearConfig

    return Float8LinearConfig(emulate=True)


def frozen_linear(n_in, n_out, seed):
    torch.manual_seed(seed)
    return torch.nn.Linear(n_in, n_out, bias=False).requires_grad_(False)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_output_and_input_gradient_match_the_linear_within_fp8_rounding(seed):
    f = fp8()
    base = frozen_linear(64, 96, seed)
    layer = f.FrozenFloat8Linear(base, emulated())
    errors = f.self_check(layer, tokens=48, seed=seed)
    # e4m3 (3 mantissa bits) forward, e5m2 (2 bits) gradients: a few percent, never exact, never off by much.
    assert 1e-3 < errors["output_rel_err"] < 0.08
    assert 1e-3 < errors["grad_input_rel_err"] < 0.12
    assert errors["weight_grad"] is False and base.weight.grad is None


def test_the_weight_copy_follows_changes_to_the_weight():
    f = fp8()
    base = frozen_linear(32, 32, 0)
    layer = f.FrozenFloat8Linear(base, emulated())
    x = torch.randn(4, 32)
    before = layer(x)
    with torch.no_grad():
        base.weight.mul_(2.0)  # e.g. an adapter merged into the base weight
    after = layer(x)
    assert torch.allclose(after, 2 * before, rtol=0.1, atol=1e-3)


def test_only_frozen_bias_free_lora_projections_with_fp8_shapes_are_swapped():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    f = fp8()
    config = LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=120,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=4, target_modules=list(f.PROJECTIONS)))
    swapped = f.convert_lora_base_layers(model, emulated())
    layer = model.base_model.model.model.layers[0]
    # 120 is not a multiple of 16: gate/up (64 -> 120) and down (120 -> 64) stay bf16; the 4 attention ones swap.
    assert swapped == 4
    assert isinstance(layer.self_attn.q_proj.base_layer, f.FrozenFloat8Linear)
    assert not isinstance(layer.mlp.down_proj.base_layer, f.FrozenFloat8Linear)
    assert not isinstance(model.base_model.model.lm_head, f.FrozenFloat8Linear)
    ids = torch.randint(0, 128, (2, 8))
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    lora_grads = [p.grad for n, p in model.named_parameters() if "lora_" in n]
    assert lora_grads and all(g is not None for g in lora_grads)
