"""LoRA projections in fewer kernels and passes over memory than PEFT's module-by-module forward.

PEFT computes ``base(x) + lora_B(lora_A(dropout(x))) * scaling`` as separate operations, and autograd stores and
walks each of them: per projection the adapter's output is scaled in one pass and added in another (the 4-bit
layer copies the base output first), and the backward scales the incoming gradient and adds two input gradients
with further full-size passes. On EEVE that is 336 projections per step, each pass as large as the projection's
output (up to 14,336 columns).

:func:`enable_fused_lora` gives each plain LoRA projection one autograd function that does the same arithmetic
with the scale and the sum folded into the matrix products (``addmm`` accumulates into the base output, and into
the base input gradient), keeps the dropout mask (1 byte per element) instead of the dropped copy of the input,
and dequantizes a 4-bit base weight for the product and again in the backward, never keeping a bf16 copy; a base
held in FP8 (:mod:`eeve_sft.training.float8`, recipe key ``float8_base``) runs its own FP8 products there. What it
does not cover (DoRA and other LoRA variants, several active adapters, merged or disabled adapters, a trainable
base or LoRA bias, DeepSpeed ZeRO-3's partitioned weights) keeps PEFT's own forward, decided at every call.

Under activation checkpointing each decoder layer's forward runs again in the backward, until the last tensor the
backward needs has been rebuilt (torch's non-reentrant checkpoint stops there). The last such tensors come from the
MLP's down projection, whose output only goes into the residual sum: yet its base product, a dequantization and the
layer's largest matrix product, is computed again before they are saved. ``enable_fused_lora(last_projections=...)``
gives those projections their base product in a node of its own after the adapter's, one that saves nothing, so the
recomputation stops before it; the adapter's backward still returns the whole input gradient.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F

# The last projection of a Llama-family decoder layer: the MLP's output projection, whose output only enters the
# residual sum (what the training assembly passes as `last_projections` under activation checkpointing).
LAST_IN_LAYER = ("down_proj",)


def _base_weight(base: torch.nn.Module, dtype: torch.dtype) -> torch.Tensor:
    """The frozen base weight as a `dtype` matrix: a 4-bit weight dequantized by bitsandbytes, freed after use."""
    weight = base.weight
    quant_state = getattr(weight, "quant_state", None)
    if quant_state is not None:
        import bitsandbytes.functional as bnbf

        weight = bnbf.dequantize_4bit(weight.data, quant_state)
    return weight if weight.dtype == dtype else weight.to(dtype)


def is_float8_base(base: torch.nn.Module) -> bool:
    return type(base).__name__ == "Float8BaseLinear"  # eeve_sft.training.float8, imported only where it is used


def _base_product(base: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``base(x)`` in `dtype` for a (tokens, in) matrix: an FP8 base's own product, else the (dequantized) weight's."""
    if is_float8_base(base):
        return base.product(x, dtype)
    bias = base.bias
    return F.linear(x, _base_weight(base, dtype), None if bias is None else bias.to(dtype))


def _base_input_grad(base: torch.nn.Module, g: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The gradient at the base's input for the gradient `g` at its output (a fresh matrix the caller adds into)."""
    if is_float8_base(base):
        return base.input_grad(g, dtype)
    return torch.mm(g, _base_weight(base, dtype))


def _masked_scale(t: torch.Tensor, keep: torch.Tensor, p: float) -> torch.Tensor:
    """``t * keep / (1 - p)`` through dropout's own backward kernel (vectorized; a bool-by-bf16 product is not)."""
    return torch.ops.aten.native_dropout_backward(t, keep, 1.0 / (1.0 - p))


class FusedLoraFunction(torch.autograd.Function):
    """``base(x) + scaling * B(A(dropout(x)))`` with one saved mask and the scale and sums inside the products."""

    # Everything runs on (tokens, features) matrices and the in-place sums go into fresh matrices, not views, so that
    # torch.compile has no view's base to copy back.
    # With `with_base` false the forward returns the adapter's term alone (for _AddBaseProduct to add the base product
    # to); the backward is the same either way and includes the base's input gradient.
    @staticmethod
    def forward(ctx, x, lora_a, lora_b, base, scaling, p, dtype, out_dtype, with_base=True):
        lead = x.shape[:-1]
        xc = x.reshape(-1, x.shape[-1]).to(dtype)
        a, b = lora_a.to(dtype), lora_b.to(dtype)
        if p > 0:
            dropped, keep = torch.native_dropout(xc, p, True)
        else:
            dropped, keep = xc, None
        xa = torch.mm(dropped, a.t())
        if with_base:
            out = _base_product(base, xc, dtype)
            out.addmm_(xa, b.t(), alpha=scaling)
        else:
            out = torch.mm(xa, b.t()).mul_(scaling)
        ctx.save_for_backward(xc, keep, xa, a, b)
        ctx.base, ctx.scaling, ctx.p, ctx.dtype = base, scaling, p, dtype
        ctx.x_dtype, ctx.lora_dtypes = x.dtype, (lora_a.dtype, lora_b.dtype)
        out = out.view(*lead, out.shape[-1])
        return out if out.dtype == out_dtype else out.to(out_dtype)

    @staticmethod
    def backward(ctx, grad_out):
        xc, keep, xa, a, b = ctx.saved_tensors
        scaling, p, dtype = ctx.scaling, ctx.p, ctx.dtype
        g = grad_out.reshape(-1, grad_out.shape[-1]).to(dtype)
        dxa = torch.mm(g, b * scaling)  # gradient at A's output: (tokens, r), small
        grad_a = grad_b = grad_x = None
        if ctx.needs_input_grad[2]:
            grad_b = torch.mm(g.t(), xa * scaling).to(ctx.lora_dtypes[1])
        if ctx.needs_input_grad[1]:
            # The dropped input, rebuilt from the mask: 1 byte kept per element instead of a 2-byte copy.
            dropped = xc if keep is None else _masked_scale(xc, keep, p)
            grad_a = torch.mm(dxa.t(), dropped).to(ctx.lora_dtypes[0])
            del dropped  # a full-size temporary: freed before the input gradient's
        if ctx.needs_input_grad[0]:
            gx = _base_input_grad(ctx.base, g, dtype)
            if keep is None:
                gx.addmm_(dxa, a)
            else:
                gx.add_(_masked_scale(torch.mm(dxa, a), keep, p))
            grad_x = gx.view(*grad_out.shape[:-1], gx.shape[-1]).to(ctx.x_dtype)
        return grad_x, grad_a, grad_b, None, None, None, None, None, None


class _AddBaseProduct(torch.autograd.Function):
    """``base(x) + lora_term`` saving nothing: a recomputation that stops at the last saved tensor never reaches it.

    Its backward passes the gradient on to the adapter's term only: the adapter's own backward (FusedLoraFunction)
    computes the whole input gradient, the base's share included, so no second full-size input gradient is summed.
    """

    @staticmethod
    def forward(ctx, x, lora_term, base, dtype, out_dtype):
        xc = x.reshape(-1, x.shape[-1]).to(dtype)
        out = _base_product(base, xc, dtype).add_(lora_term.view(xc.shape[0], -1))
        ctx.term_dtype = lora_term.dtype
        out = out.view(*x.shape[:-1], out.shape[-1])
        return out if out.dtype == out_dtype else out.to(out_dtype)

    @staticmethod
    def backward(ctx, grad_out):
        return None, grad_out.to(ctx.term_dtype), None, None, None


def _static_support(module) -> bool:
    """Whether `module`'s structure is one the fused function computes: a plain LoRA on a Linear or 4-bit Linear."""
    from peft.tuners.lora import LoraLayer

    if not isinstance(module, LoraLayer) or not hasattr(module, "lora_A"):
        return False
    base = module.get_base_layer()
    # torch's Linear, bitsandbytes' Linear4bit (a subclass) or an FP8 base (float8.py); 8-bit and other quantized
    # Linears keep PEFT's path.
    return is_float8_base(base) or (
        isinstance(base, torch.nn.Linear) and type(base).__name__ in ("Linear", "Linear4bit")
    )


def _call_plan(module, args, kwargs):
    """What this call fuses, ``(adapter name, lora_A, lora_B, base layer)``, or None when PEFT's own forward must run.

    Every check runs at every call (adapters can be merged, disabled or switched at any time); each module is looked
    up once, since nn.Module attribute lookups are a measurable part of a step's host time."""
    if args or kwargs or module.disable_adapters or module.merged:
        return None
    adapters_a = module.lora_A
    active = [name for name in module.active_adapters if name in adapters_a]
    if len(active) != 1:
        return None
    name = active[0]
    if name in getattr(module, "lora_variant", {}) or module.use_dora.get(name, False):
        return None
    lora_a, lora_b = adapters_a[name], module.lora_B[name]
    if not isinstance(lora_a, torch.nn.Linear) or not isinstance(lora_b, torch.nn.Linear):
        return None
    if lora_a.bias is not None or lora_b.bias is not None:
        return None
    base = module.get_base_layer()
    if base.weight.requires_grad or (base.bias is not None and base.bias.requires_grad):
        return None
    if any(hasattr(w, "ds_id") for w in (lora_a.weight, lora_b.weight, base.weight)):
        return None  # ZeRO-3: weights are gathered by module hooks that calling the function directly would skip
    return name, lora_a, lora_b, base


def _fused_forward(self, x, *args, **kwargs):
    plan = _call_plan(self, args, kwargs)
    if plan is None:
        return type(self).forward(self, x, *args, **kwargs)
    name, lora_a, lora_b, base = plan
    quantized = getattr(base.weight, "quant_state", None) is not None
    device = x.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
    elif quantized or is_float8_base(base):
        dtype = getattr(base, "compute_dtype", None) or x.dtype
    else:
        dtype = base.weight.dtype
    # What PEFT's forward returns: the 4-bit layer gives back the input's dtype, a Linear its matmul's.
    out_dtype = x.dtype if quantized else dtype
    dropout = self.lora_dropout[name]
    p = dropout.p if isinstance(dropout, torch.nn.Dropout) and dropout.training else 0.0
    lora = (x, lora_a.weight, lora_b.weight, base, self.scaling[name], p, dtype)
    if not self._eeve_base_last:
        return FusedLoraFunction.apply(*lora, out_dtype)
    term = FusedLoraFunction.apply(*lora, dtype, False)
    return _AddBaseProduct.apply(x, term, base, dtype, out_dtype)


def enable_fused_lora(model, last_projections: tuple[str, ...] = ()) -> int:
    """Route every plain LoRA projection of `model` through :class:`FusedLoraFunction`; returns how many.

    Projections whose module name ends in one of `last_projections` compute their base product after the adapter,
    in a node that saves nothing (see the module docstring): for the last projection of each activation-checkpointed
    layer (``down_proj`` in Llama-family models). Each call still checks that the fused path applies and otherwise
    runs PEFT's own forward, so merging, disabling or switching adapters later keeps working."""
    changed = 0
    for name, module in model.named_modules():
        if _static_support(module) and not getattr(module, "_eeve_fused_lora", False):
            module.forward = types.MethodType(_fused_forward, module)
            module._eeve_fused_lora = True
            module._eeve_base_last = name.rsplit(".", 1)[-1] in last_projections
            changed += 1
    return changed
