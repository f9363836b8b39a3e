"""Matrix FLOPs of one training step of one EEVE-shaped decoder layer, LoRA as the default recipe sets it (r 64 on the
7 projections) through the fused path, under activation checkpointing: with down_proj's base product inside its LoRA
node (recomputed in the backward) and after it (fused_lora's `last_projections`, what the training assembly sets),
counted on CPU by torch's FlopCounterMode. A count depends on shapes alone, so the figures hold on any device; what
they are worth in time is in RESULTS.md (measured on a GPU before the old order was removed from bench_train).

    python -m benchmarks.step_flops [--tokens 2048] [--write benchmarks/results/step_flops/eeve_layer_2048.json]

Attention is counted as SDPA's dense causal product (the recipes' flex attention skips the blocks between packed
conversations, so it does less); every other product is the same as in training.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.common import REPO, RESULTS_ROOT

DEFAULT_RECIPE = REPO / "recipes/eeve_banmal.yaml"
ORDERS = ("last_base_recomputed", "last_base_after_lora")
ORDER_LABELS = {
    "last_base_recomputed": "down_proj's base product inside its LoRA node (recomputed in the backward)",
    "last_base_after_lora": "base product after the adapter, in a node that saves nothing (shipped)",
}
RESULTS = RESULTS_ROOT / "step_flops"
BEGIN, END = "<!-- step_flops: begin -->", "<!-- step_flops: end -->"


def _inplace_addmm_flops(self_shape, a_shape, b_shape, out_shape=None, **kwargs) -> int:
    """The fused path accumulates products in place (``addmm_``), which the counter's own table leaves out."""
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


def layer_step_flops(tokens: int, tiny: bool = False) -> dict:
    """FLOPs of one forward + backward of one checkpointed decoder layer over `tokens` tokens, for each order."""
    import torch
    from peft import LoraConfig, inject_adapter_in_model
    from torch.utils.checkpoint import checkpoint
    from torch.utils.flop_counter import FlopCounterMode
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

    from benchmarks.synthetic import llama_config
    from eeve_sft.training.fused_lora import LAST_IN_LAYER, enable_fused_lora
    from eeve_sft.training.recipe import read_recipe

    config = llama_config(tiny)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    x = torch.randn(1, tokens, config.hidden_size)
    positions = torch.arange(tokens)[None]
    rope = LlamaRotaryEmbedding(config)(x, positions)
    keys = read_recipe(DEFAULT_RECIPE)
    targets = keys["lora_target_modules"]
    counts = {}
    for order, last in zip(ORDERS, ((), LAST_IN_LAYER), strict=True):
        layer = LlamaDecoderLayer(config, layer_idx=0)
        layer.requires_grad_(False)
        lora = LoraConfig(
            r=keys["lora_r"], lora_alpha=keys["lora_alpha"], lora_dropout=keys["lora_dropout"], target_modules=targets
        )
        layer = inject_adapter_in_model(lora, layer)
        enable_fused_lora(layer, last_projections=last)
        layer.train()
        inputs = x.clone().requires_grad_(True)
        with FlopCounterMode(display=False, custom_mapping={torch.ops.aten.addmm_: _inplace_addmm_flops}) as counter:
            out = checkpoint(layer, inputs, position_embeddings=rope, position_ids=positions, use_reentrant=False)
            (out[0] if isinstance(out, tuple) else out).float().square().mean().backward()
        counts[order] = counter.get_total_flops()
    saved = counts["last_base_recomputed"] - counts["last_base_after_lora"]
    return {
        "tokens": tokens,
        "shapes": "tiny" if tiny else "EEVE (hidden 4096, MLP 14336, 32/8 heads)",
        "lora": f"r {keys['lora_r']}, alpha {keys['lora_alpha']}, dropout {keys['lora_dropout']} on "
        + ", ".join(targets),
        "flops": counts,
        "saved_flops": saved,
        "saved_share": saved / counts["last_base_recomputed"],
        "down_proj_forward_flops": 2 * tokens * config.hidden_size * config.intermediate_size,
    }


def generated_block(path: Path = RESULTS / "eeve_layer_2048.json") -> str:
    """The RESULTS.md block of a stored count: both orders per layer step and per token, and what the shipped one saves."""
    result = json.loads(Path(path).read_text(encoding="utf-8"))
    tokens = result["tokens"]
    lines = [BEGIN, "| fused order | GFLOP per layer step | MFLOP per token |", "|---|---:|---:|"]
    lines += [
        f"| {ORDER_LABELS[order]} | {flops / 1e9:,.1f} | {flops / tokens / 1e6:,.1f} |"
        for order, flops in result["flops"].items()
    ]
    whole = (
        " exactly the down projection's forward product,"
        if result["saved_flops"] == result["down_proj_forward_flops"]
        else ""
    )
    lines += [
        "",
        f"- Saved: {result['saved_flops'] / 1e9:,.1f} GFLOP,{whole} **{100 * result['saved_share']:.1f}% of the layer's "
        f"step** ({tokens:,} tokens; raw results: `{Path(path).resolve().relative_to(REPO)}`).",
        END,
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2048, help="tokens in the step (one packed row: 2048)")
    parser.add_argument("--tiny", action="store_true", help="the benchmark's tiny shapes (a test of this script)")
    parser.add_argument("--write", type=Path, help="JSON file for the result")
    args = parser.parse_args()
    if args.tokens < 1:
        parser.error(f"--tokens must be at least 1, got {args.tokens}")
    result = layer_step_flops(args.tokens, args.tiny)
    for order, flops in result["flops"].items():
        print(f"{order}: {flops / 1e9:,.1f} GFLOP ({flops / args.tokens / 1e6:,.1f} MFLOP a token)")
    print(f"saved: {result['saved_flops'] / 1e9:,.1f} GFLOP, {100 * result['saved_share']:.1f}% of the layer's step")
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
