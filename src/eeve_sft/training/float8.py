"""FP8 matrix products for the frozen base projections under LoRA adapters (recipe key ``float8_base``).

A LoRA base weight never changes while the adapters train, so it is cast to FP8 once, when the trainer is built,
and its bf16 copy is dropped: the weights take half the memory. The input gradient's product needs the weight's
transpose in memory (FP8 tensor cores read both operands along the summed dimension); it is made for each backward
and freed after it, a copy of one byte per weight element. Scales are tensorwise, from torchao's float8 helpers, as
in torchao's default float8 training recipe: e4m3 for weights and inputs, e5m2 for the incoming gradients. Only the
input gradient is computed (the weight is frozen); the LoRA A/B products, norms, attention and everything trained
stay in bf16.

The fused LoRA projection (:mod:`eeve_sft.training.fused_lora`) calls :meth:`Float8BaseLinear.product` and
:meth:`Float8BaseLinear.input_grad` inside its own autograd function; on its own the module is a linear layer
with that backward (PEFT's forward calls it so).
"""

from __future__ import annotations

import torch
from torchao.float8.float8_utils import tensor_to_scale, to_fp8_saturated

# The LoRA targets of every recipe; others (lm_head, embeddings) keep their dtype.
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
WEIGHT_DTYPE = torch.float8_e4m3fn
GRAD_DTYPE = torch.float8_e5m2


def _cast(t: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``t`` as an FP8 matrix and the inverse of its scale (what ``_scaled_mm`` multiplies the product by)."""
    scale = tensor_to_scale(t, dtype)
    return to_fp8_saturated(t.float() * scale, dtype), scale.reciprocal()


class _Float8Product(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, layer):
        ctx.layer = layer
        return layer.product(x.reshape(-1, x.shape[-1])).view(*x.shape[:-1], layer.out_features)

    @staticmethod
    def backward(ctx, grad_out):
        grad = ctx.layer.input_grad(grad_out.reshape(-1, grad_out.shape[-1]), grad_out.dtype)
        return grad.view(*grad_out.shape[:-1], ctx.layer.in_features), None


class Float8BaseLinear(torch.nn.Module):
    """A frozen, bias-free linear layer whose weight is held in FP8 and whose products run in FP8."""

    def __init__(self, base: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = base.in_features, base.out_features
        self.compute_dtype = base.weight.dtype
        with torch.no_grad():
            weight, scale_inv = _cast(base.weight.detach(), WEIGHT_DTYPE)
        self.register_buffer("weight_fp8", weight)  # (out, in), row-major: the forward's column-major W.T
        self.register_buffer("weight_scale_inv", scale_inv)

    @property
    def weight(self) -> torch.Tensor:
        """The FP8 weight (frozen, never a parameter): what code that inspects a base layer's weight finds."""
        return self.weight_fp8

    bias = None

    def product(self, x: torch.Tensor, out_dtype: torch.dtype | None = None) -> torch.Tensor:
        """``x @ W.T`` for a (tokens, in) matrix in FP8 (e4m3 × e4m3), in `out_dtype` (default: the weight's)."""
        x2, x_scale_inv = _cast(x, WEIGHT_DTYPE)
        return torch._scaled_mm(
            x2,
            self.weight_fp8.t(),
            scale_a=x_scale_inv,
            scale_b=self.weight_scale_inv,
            out_dtype=out_dtype or self.compute_dtype,
            use_fast_accum=True,
        )

    def input_grad(self, grad_out: torch.Tensor, out_dtype: torch.dtype | None = None) -> torch.Tensor:
        """``grad_out @ W`` for a (tokens, out) matrix in FP8 (e5m2 gradient × e4m3 weight), in `out_dtype`."""
        g2, g_scale_inv = _cast(grad_out, GRAD_DTYPE)
        return torch._scaled_mm(
            g2,
            self.weight_fp8.t().contiguous().t(),
            scale_a=g_scale_inv,
            scale_b=self.weight_scale_inv,
            out_dtype=out_dtype or self.compute_dtype,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled(x.device.type):  # what F.linear's autocast rule would have done
            x = x.to(torch.get_autocast_dtype(x.device.type))
        return _Float8Product.apply(x.to(self.compute_dtype), self)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fp8={WEIGHT_DTYPE}"


def applies_to(module: torch.nn.Module) -> bool:
    """FP8 products need both dimensions divisible by 16, a frozen weight and no bias; anything else stays."""
    return (
        type(module) is torch.nn.Linear
        and module.bias is None
        and not module.weight.requires_grad
        and module.weight.dtype in (torch.bfloat16, torch.float16, torch.float32)
        and module.in_features % 16 == 0
        and module.out_features % 16 == 0
    )


def convert_lora_base_layers(model: torch.nn.Module) -> int:
    """Replace the frozen `base_layer` of every LoRA-wrapped projection by a Float8BaseLinear, one at a time (each
    bf16 weight is freed as its FP8 copy is made); returns how many were replaced."""
    converted = 0
    for name, module in list(model.named_modules()):
        base = getattr(module, "base_layer", None)
        if name.rsplit(".", 1)[-1] in PROJECTIONS and base is not None and applies_to(base):
            module.base_layer = Float8BaseLinear(base)
            converted += 1
    return converted


def self_check(base: torch.nn.Linear, tokens: int = 2048, seed: int = 0) -> dict:
    """Relative error of a Float8BaseLinear made from `base` against `base` itself: its output and input gradient
    for random inputs and gradients (the FP8 rounding of weights, inputs and gradients together)."""
    layer = Float8BaseLinear(base.requires_grad_(False))
    weight = base.weight
    gen = torch.Generator(device=weight.device).manual_seed(seed)
    x = torch.randn(tokens, base.in_features, device=weight.device, dtype=weight.dtype, generator=gen)
    grad = torch.randn(tokens, base.out_features, device=weight.device, dtype=weight.dtype, generator=gen)
    x_fp8, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    layer(x_fp8).backward(grad)
    torch.nn.functional.linear(x_ref, weight).backward(grad)

    def rel(a, b):
        return float((a.float() - b.float()).norm() / b.float().norm())

    return {
        "output_rel_err": rel(layer.product(x), torch.nn.functional.linear(x, weight)),
        "grad_input_rel_err": rel(x_fp8.grad, x_ref.grad),
    }
