"""FP8 matmuls for the frozen base projections under LoRA adapters, through torchao's float8 casts and scaled matmul.

torchao's `convert_to_float8_training` swaps `nn.Linear` for a `Float8Linear` whose backward always computes the
weight gradient: for a frozen LoRA base weight that is a third matmul per projection thrown away, more than FP8
saves. `FrozenFloat8Linear` keeps torchao's tensorwise-scaled casts (`hp_tensor_to_float8_dynamic`) and its
`torch.mm` dispatch to `torch._scaled_mm`, and differs in two ways that a frozen weight allows: backward computes
the input gradient only, and the weight's FP8 copy is made once and reused until the weight changes. The LoRA A/B
matmuls, norms, attention and everything trained stay in bf16.
"""

from __future__ import annotations

import torch
from torchao.float8.config import Float8LinearConfig, e4m3_dtype
from torchao.float8.float8_scaling_utils import hp_tensor_to_float8_dynamic
from torchao.float8.float8_training_tensor import GemmInputRole, LinearMMConfig, ScaledMMConfig

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _mm_config(config: Float8LinearConfig) -> LinearMMConfig:
    """The three GEMM configurations torchao's Float8Linear derives from its config, derived the same way."""

    def one(gemm):
        return ScaledMMConfig(config.emulate, gemm.use_fast_accum, False, config.pad_inner_dim)

    return LinearMMConfig(
        one(config.gemm_config_output), one(config.gemm_config_grad_input), one(config.gemm_config_grad_weight)
    )


class _FrozenWeightFloat8Matmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight_t_fp8, mm_config, grad_dtype):
        ctx.weight_t_fp8, ctx.mm_config, ctx.grad_dtype = weight_t_fp8, mm_config, grad_dtype
        x2 = hp_tensor_to_float8_dynamic(
            x.reshape(-1, x.shape[-1]), e4m3_dtype, mm_config, gemm_input_role=GemmInputRole.INPUT
        )
        out = torch.mm(x2, weight_t_fp8)
        return out.reshape(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad_out):
        g2 = hp_tensor_to_float8_dynamic(
            grad_out.reshape(-1, grad_out.shape[-1]),
            ctx.grad_dtype,
            ctx.mm_config,
            gemm_input_role=GemmInputRole.GRAD_OUTPUT,
        )
        grad_in = torch.mm(g2, ctx.weight_t_fp8.t())
        return grad_in.reshape(*grad_out.shape[:-1], grad_in.shape[-1]), None, None, None


class FrozenFloat8Linear(torch.nn.Linear):
    """A frozen, bias-free `nn.Linear` (sharing the original's weight) whose matmuls run in FP8."""

    def __init__(self, base: torch.nn.Linear, config: Float8LinearConfig | None = None):
        with torch.device("meta"):
            super().__init__(base.in_features, base.out_features, bias=False)
        self.weight = base.weight
        self.config = config or Float8LinearConfig()
        self.mm_config = _mm_config(self.config)
        self._cache = None  # (weight version, FP8 copy of weight.t())

    def weight_t_fp8(self):
        version = (self.weight.data_ptr(), self.weight._version)
        if self._cache is None or self._cache[0] != version:
            with torch.no_grad():
                cast = hp_tensor_to_float8_dynamic(
                    self.weight.t(), e4m3_dtype, self.mm_config, gemm_input_role=GemmInputRole.WEIGHT
                )
            self._cache = (version, cast)
        return self._cache[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled(x.device.type):  # what F.linear's autocast rule would have done
            x = x.to(torch.get_autocast_dtype(x.device.type))
        elif x.dtype != self.weight.dtype:
            x = x.to(self.weight.dtype)
        grad_dtype = self.config.cast_config_grad_output.target_dtype
        return _FrozenWeightFloat8Matmul.apply(x, self.weight_t_fp8(), self.mm_config, grad_dtype)


def applies_to(module: torch.nn.Module) -> bool:
    """FP8 GEMMs need both dimensions divisible by 16, a frozen weight and no bias; anything else stays as it is."""
    return (
        type(module) is torch.nn.Linear
        and module.bias is None
        and not module.weight.requires_grad
        and module.in_features % 16 == 0
        and module.out_features % 16 == 0
    )


def convert_lora_base_layers(model: torch.nn.Module, config: Float8LinearConfig | None = None) -> int:
    """Swap the frozen `base_layer` of every LoRA-wrapped projection for a FrozenFloat8Linear; returns how many."""
    swapped = 0
    for name, module in model.named_modules():
        base = getattr(module, "base_layer", None)
        if name.rsplit(".", 1)[-1] in PROJECTIONS and base is not None and applies_to(base):
            module.base_layer = FrozenFloat8Linear(base, config)
            swapped += 1
    return swapped


def self_check(layer: FrozenFloat8Linear, tokens: int = 2048, seed: int = 0) -> dict:
    """Relative error of the layer's output and input gradient against the same matmuls in the weight's dtype."""
    weight = layer.weight
    gen = torch.Generator(device=weight.device).manual_seed(seed)
    x = torch.randn(tokens, layer.in_features, device=weight.device, dtype=weight.dtype, generator=gen)
    grad = torch.randn(tokens, layer.out_features, device=weight.device, dtype=weight.dtype, generator=gen)
    x_fp8, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = layer(x_fp8)
    out.backward(grad)
    ref = torch.nn.functional.linear(x_ref, weight)
    ref.backward(grad)

    def rel(a, b):
        return float((a.float() - b.float()).norm() / b.float().norm())

    return {
        "output_rel_err": rel(out, ref),
        "grad_input_rel_err": rel(x_fp8.grad, x_ref.grad),
        "weight_grad": weight.grad is not None,
    }
