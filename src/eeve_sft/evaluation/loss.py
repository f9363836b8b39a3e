"""Mean token loss of a model on a recipe's eval split, with the template and masking of training."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UserError
from ..template import pad_token_id


@dataclass
class EvalData:
    conversations: list[list[dict]]
    max_length: int | None
    assistant_only_loss: bool
    description: str


def load_eval_data(recipe_or_run_dir: str | Path, limit: int | None = None) -> EvalData:
    """The eval split a recipe trains against, selected exactly as training selects it; for a DPO recipe, its
    held-out pairs' chosen (존댓말) conversations."""
    from ..training.assembly import select_data
    from ..training.recipe import parse_recipe, recipe_classes
    from ..training.run_dir import RunDir

    path = Path(recipe_or_run_dir)
    recipe_file = path / "recipe.yaml" if path.is_dir() else path
    if path.is_dir() and not recipe_file.is_file():
        raise UserError(f"{path} has no recipe.yaml: give a recipe file or a training run directory")
    recipe = parse_recipe(recipe_file, check_device=False, classes=recipe_classes(recipe_file))
    script, training = recipe.script, recipe.training
    # A relative dataset path is as given (cwd), else found through the run's parents (a run read elsewhere).
    found = RunDir(recipe_file.parent).find_near(script.dataset_name)
    if recipe.dpo is not None:
        from ..training.preference import select_pairs

        script.dataset_name = str(found) if found else script.dataset_name
        pairs = select_pairs(recipe, with_eval=True).eval
        pairs = pairs.select(range(min(limit, len(pairs)))) if limit is not None else pairs
        description = f"{script.dataset_name} [{script.dataset_test_split}], chosen answers of {len(pairs)} pairs"
        return EvalData([p["prompt"] + p["chosen"] for p in pairs], training.max_length, True, description)
    eval_split = select_data(recipe, with_eval=True, dataset_name=str(found) if found else None).eval
    if limit is not None:
        eval_split = eval_split.select(range(min(limit, len(eval_split))))
    description = f"{script.dataset_name} [{script.dataset_test_split}], {len(eval_split)} conversations"
    return EvalData(list(eval_split["messages"]), training.max_length, training.assistant_only_loss, description)


@torch.inference_mode()
def eval_loss(model, tokenizer, data: EvalData, batch_size: int = 4) -> tuple[float, int]:
    """Mean token cross-entropy over the trained (assistant) tokens of `data`, and how many tokens that was."""
    from ..training.data import IGNORE_INDEX, tokenize_conversation

    rows = [tokenize_conversation(m, tokenizer, data.max_length, data.assistant_only_loss) for m in data.conversations]
    rows = [r for r in rows if r["num_trained"] > 0]  # training drops these too
    rows.sort(key=lambda r: len(r["input_ids"]))  # similar lengths per batch: less padding; the sum is the same
    if not rows:
        raise UserError(f"no eval conversation keeps a trained token at max_length={data.max_length}")
    pad = pad_token_id(tokenizer)
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        width = max(len(r["input_ids"]) for r in chunk)
        ids = torch.tensor([r["input_ids"] + [pad] * (width - len(r["input_ids"])) for r in chunk], device=device)
        mask = torch.tensor(
            [[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in chunk], device=device
        )
        labels = torch.tensor([r["labels"] + [IGNORE_INDEX] * (width - len(r["labels"])) for r in chunk], device=device)
        logits = model(input_ids=ids, attention_mask=mask).logits
        # Token t predicts token t+1, as in the trainer's causal LM loss.
        shifted_logits, shifted_labels = logits[:, :-1].float(), labels[:, 1:]
        total += torch.nn.functional.cross_entropy(
            shifted_logits.reshape(-1, shifted_logits.size(-1)),
            shifted_labels.reshape(-1),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        ).item()
        count += int((shifted_labels != IGNORE_INDEX).sum())
    return total / count, count
