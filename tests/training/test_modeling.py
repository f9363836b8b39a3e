"""Model-side speed settings that must leave the loss unchanged."""

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from eeve_sft.training.modeling import skip_redundant_lora_input_casts
from helpers import DEMO_MODEL

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def bf16_lora_model():
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(DEMO_MODEL, dtype=torch.bfloat16)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS, init_lora_weights=False, lora_dropout=0.0)
    return get_peft_model(model, config)  # adapters upcast to fp32, as PEFT does for a bf16 base


def autocast_loss(model, ids):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return model(input_ids=ids, labels=ids).loss.float()


def test_skipping_the_fp32_input_cast_under_bf16_autocast_keeps_the_loss_and_gradients():
    model = bf16_lora_model()
    lora_a = next(p for n, p in model.named_parameters() if "lora_A" in n)
    assert lora_a.dtype == torch.float32
    ids = torch.randint(3, 2000, (2, 48), generator=torch.Generator().manual_seed(1))

    with_cast = autocast_loss(model, ids)
    with_cast.backward()
    grad_with_cast = lora_a.grad.clone()
    model.zero_grad()

    assert skip_redundant_lora_input_casts(model) == 2 * len(TARGETS)  # 2 layers x 7 projections
    assert skip_redundant_lora_input_casts(model) == 0  # already off
    without_cast = autocast_loss(model, ids)
    without_cast.backward()

    assert torch.equal(with_cast, without_cast)
    assert torch.equal(grad_with_cast, lora_a.grad)
