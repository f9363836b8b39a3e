"""The fused LoRA projection computes what PEFT's forward computes: outputs and every gradient, dropout included."""

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch.utils.checkpoint import checkpoint
from transformers import AutoModelForCausalLM

from eeve_sft.training.fused_lora import FusedLoraFunction, enable_fused_lora
from helpers import DEMO_MODEL

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class Block(torch.nn.Module):
    def __init__(self, base: torch.nn.Module):
        super().__init__()
        self.proj = base

    def forward(self, x):
        return self.proj(x)


def lora_block(base: torch.nn.Module, dropout: float = 0.0):
    config = LoraConfig(r=4, lora_alpha=12, target_modules=["proj"], lora_dropout=dropout, init_lora_weights=False)
    torch.manual_seed(3)
    return get_peft_model(Block(base), config)


def grads_of(model, x, seed=7):
    x = x.clone().requires_grad_(True)
    torch.manual_seed(seed)
    out = model(x)
    (out.float() * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return out.detach(), x.grad, grads


def assert_close(a, b, rtol):
    err = (a.float() - b.float()).norm() / b.float().norm()
    assert err < rtol, f"relative error {err:.2e}"


def test_fused_projection_matches_peft_in_float32_without_dropout():
    peft_model = lora_block(torch.nn.Linear(24, 40, bias=True))
    fused = copy.deepcopy(peft_model)
    assert enable_fused_lora(fused) == 1
    assert enable_fused_lora(fused) == 0  # already routed
    x = torch.randn(3, 5, 24)
    ref_out, ref_dx, ref_grads = grads_of(peft_model, x)
    out, dx, grads = grads_of(fused, x)
    assert_close(out, ref_out, 1e-6)
    assert_close(dx, ref_dx, 1e-6)
    assert sorted(grads) == sorted(ref_grads) and len(grads) == 2  # lora_A and lora_B only
    for name, grad in grads.items():
        assert grad.dtype == ref_grads[name].dtype
        assert_close(grad, ref_grads[name], 1e-6)


# `last`: the base product inside the LoRA node, or in a node of its own after it (enable_fused_lora's last_projections).
SPLITS = [(), ("proj",)]


@pytest.mark.parametrize("last", SPLITS)
def test_dropout_uses_one_mask_for_output_and_gradients(last):
    """Against the same arithmetic written out with the mask the fused call drew (same seed, same draw)."""
    p = 0.3
    model = lora_block(torch.nn.Linear(16, 12, bias=False), dropout=p)
    enable_fused_lora(model, last_projections=last)
    model.train()
    layer = model.base_model.model.proj
    a, b, w = layer.lora_A["default"].weight, layer.lora_B["default"].weight, layer.base_layer.weight
    x = torch.randn(6, 16)
    out, dx, grads = grads_of(model, x, seed=11)

    torch.manual_seed(11)
    _, keep = torch.native_dropout(x, p, True)
    assert 0 < keep.float().mean() < 1
    xr = x.clone().requires_grad_(True)
    ar, br = a.detach().clone().requires_grad_(True), b.detach().clone().requires_grad_(True)
    ref = xr @ w.t() + (xr * keep / (1 - p)) @ ar.t() @ br.t() * layer.scaling["default"]
    (ref * torch.linspace(-1, 1, ref.shape[-1])).sum().backward()
    assert_close(out, ref.detach(), 1e-6)
    assert_close(dx, xr.grad, 1e-6)
    assert_close(grads["base_model.model.proj.lora_A.default.weight"], ar.grad, 1e-6)
    assert_close(grads["base_model.model.proj.lora_B.default.weight"], br.grad, 1e-6)
    # Another draw gives another mask: the dropout is live, not fixed.
    out2, _, _ = grads_of(model, x, seed=12)
    assert not torch.allclose(out, out2)


def test_dropout_mask_is_redrawn_identically_under_activation_checkpointing():
    model = lora_block(torch.nn.Linear(16, 12, bias=False), dropout=0.2)
    enable_fused_lora(model)
    model.train()
    x = torch.randn(4, 16)

    class Checkpointed(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return checkpoint(self.inner, x, use_reentrant=False)

    out, dx, grads = grads_of(model, x, seed=5)
    out_c, dx_c, grads_c = grads_of(Checkpointed(model), x, seed=5)
    assert torch.equal(out, out_c) and torch.equal(dx, dx_c)
    for name, grad in grads.items():
        assert torch.equal(grad, grads_c["inner." + name])


@pytest.mark.parametrize("last", SPLITS)
def test_four_bit_base_matches_peft(last):
    bnb = pytest.importorskip("bitsandbytes")
    torch.manual_seed(0)
    dense = torch.nn.Linear(64, 96, bias=False)
    quantized = bnb.nn.Linear4bit(64, 96, bias=False, compute_dtype=torch.float32, quant_type="nf4")
    quantized.weight = bnb.nn.Params4bit(dense.weight.data.clone(), requires_grad=False, quant_type="nf4")
    quantized = quantized.to("cpu")
    assert quantized.weight.quant_state is not None
    peft_model = lora_block(quantized)
    fused = copy.deepcopy(peft_model)
    assert enable_fused_lora(fused, last_projections=last) == 1
    x = torch.randn(2, 7, 64)
    ref_out, ref_dx, ref_grads = grads_of(peft_model, x)
    out, dx, grads = grads_of(fused, x)
    assert out.dtype == ref_out.dtype
    assert_close(out, ref_out, 1e-5)
    assert_close(dx, ref_dx, 1e-5)
    for name, grad in grads.items():
        assert_close(grad, ref_grads[name], 1e-5)


def test_bf16_model_under_autocast_is_as_close_to_float32_as_peft():
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(DEMO_MODEL, dtype=torch.bfloat16)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS, init_lora_weights=False, lora_dropout=0.0)
    peft_model = get_peft_model(base, config)
    fused = copy.deepcopy(peft_model)
    assert enable_fused_lora(fused) == 2 * len(TARGETS)
    exact = copy.deepcopy(peft_model).float()
    ids = torch.randint(3, 2000, (2, 40), generator=torch.Generator().manual_seed(1))

    def loss_and_grads(model, autocast):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(input_ids=ids, labels=ids).loss.float()
        loss.backward()
        return float(loss), {n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None}

    exact_loss, exact_grads = loss_and_grads(exact, False)
    peft_loss, peft_grads = loss_and_grads(peft_model, True)
    loss, grads = loss_and_grads(fused, True)
    assert sorted(grads) == sorted(exact_grads)
    assert all(p.grad.dtype == torch.float32 for p in fused.parameters() if p.grad is not None)

    def worst(found):
        return max(float((found[n] - g).norm() / g.norm()) for n, g in exact_grads.items())

    # bf16 operands put both a few percent from float32; the fused path must be no further off than PEFT's.
    assert abs(loss - exact_loss) < 2 * abs(peft_loss - exact_loss) + 1e-4
    assert worst(grads) < 1.5 * worst(peft_grads)


def test_checkpointed_recomputation_stops_before_the_last_projections_base_product(monkeypatch):
    """With down_proj last, each layer's backward recomputes every base product but down_proj's; gradients unchanged."""
    from eeve_sft.training import fused_lora

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(DEMO_MODEL, dtype=torch.float32)
    down_shape = torch.Size((model.config.hidden_size, model.config.intermediate_size))
    layers = model.config.num_hidden_layers
    config = LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS, init_lora_weights=False, lora_dropout=0.1)
    reference = get_peft_model(model, config)
    ids = torch.randint(3, 2000, (2, 40), generator=torch.Generator().manual_seed(1))
    shapes = []  # the weight shape of every base product the fused path computes
    original = fused_lora._base_product
    monkeypatch.setattr(
        fused_lora, "_base_product", lambda base, *a: shapes.append(base.weight.shape) or original(base, *a)
    )

    def step(peft_model, checkpointing):
        peft_model.train()
        if checkpointing:
            peft_model.activation_checkpointing_enable({"use_reentrant": False})
        shapes.clear()
        torch.manual_seed(4)  # the same dropout masks in every model, and again in the recomputation
        peft_model(input_ids=ids, labels=ids).loss.backward()
        return {n: p.grad.clone() for n, p in peft_model.named_parameters() if p.grad is not None}

    ref_grads = step(reference, checkpointing=False)  # PEFT's forward, nothing recomputed
    counts = {}
    for last in ((), ("down_proj",)):
        fused = copy.deepcopy(reference)
        fused.zero_grad()
        assert enable_fused_lora(fused, last_projections=last) == layers * len(TARGETS)
        marked = [n for n, m in fused.named_modules() if getattr(m, "_eeve_base_last", False)]
        assert len(marked) == (layers if last else 0) and all(n.endswith(".down_proj") for n in marked)
        grads = step(fused, checkpointing=True)
        counts[last] = (len(shapes), shapes.count(down_shape))
        assert sorted(grads) == sorted(ref_grads)
        for name, grad in grads.items():
            assert_close(grad, ref_grads[name], 1e-5)
    # Without the split every base product runs twice (forward, recomputation); with it down_proj's runs once.
    assert counts[()] == (2 * layers * len(TARGETS), 2 * layers)
    assert counts[("down_proj",)] == (2 * layers * len(TARGETS) - layers, layers)


def test_peft_forward_runs_where_the_fused_path_does_not_apply(monkeypatch):
    model = lora_block(torch.nn.Linear(8, 8, bias=False))
    enable_fused_lora(model)
    calls = []
    original = FusedLoraFunction.apply
    monkeypatch.setattr(FusedLoraFunction, "apply", lambda *a: calls.append(1) or original(*a))
    x = torch.randn(2, 8)
    layer = model.base_model.model.proj
    base_only = layer.base_layer(x)

    adapted = model(x)
    assert len(calls) == 1
    with model.disable_adapter():
        assert torch.equal(model(x), base_only)
    layer.merge()
    assert torch.allclose(model(x), adapted, atol=1e-5)
    layer.unmerge()
    assert len(calls) == 1  # disabled and merged adapters went through PEFT's forward
    layer.base_layer.weight.requires_grad_(True)  # a trainable base needs its weight gradient: PEFT's path
    model(x)
    assert len(calls) == 1


@pytest.mark.parametrize("fused, checkpointing", [(True, True), (True, False), (False, True)])
def test_the_training_assembly_routes_the_recipes_projections_as_the_recipe_says(
    fused, checkpointing, tmp_path, monkeypatch
):
    from eeve_sft.training.assembly import build_trainer, prepare_data
    from eeve_sft.training.modeling import tokenizer_for_recipe
    from eeve_sft.training.recipe import parse_recipe
    from helpers import REPO

    monkeypatch.chdir(REPO)
    flags = ["--output_dir", str(tmp_path / "run"), "--fused_lora", str(fused).lower(), "--eval_strategy", "no"]
    flags += ["--activation_checkpointing", str(checkpointing).lower()]
    recipe = parse_recipe(REPO / "recipes/demo_cpu.yaml", flags)
    tokenizer = tokenizer_for_recipe(recipe)
    trainer = build_trainer(recipe, tokenizer, prepare_data(recipe, tokenizer, names=["train"], limit=4))
    routed = {n for n, m in trainer.model.named_modules() if getattr(m, "_eeve_fused_lora", False)}
    assert len(routed) == (2 * len(TARGETS) if fused else 0)
    # Under checkpointing each layer's down projection adds its base product after its adapter.
    last = {n for n, m in trainer.model.named_modules() if getattr(m, "_eeve_base_last", False)}
    assert last == ({n for n in routed if n.endswith(".down_proj")} if checkpointing else set())
    assert len(last) == (2 if fused and checkpointing else 0)
