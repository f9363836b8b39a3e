"""`eval_fraction`: the share of train held out for evaluation when the data has no eval split, as training
selects it (the training assembly's select_data): its size, that no row is in both, and that the seed decides it."""

import json
import math

from eeve_sft.training.assembly import select_data
from eeve_sft.training.recipe import parse_recipe
from helpers import DEMO_RECIPE, REPO

TRAIN = REPO / "data" / "demo" / "train.jsonl"


def held_out(fraction: float, seed: int = 42):
    recipe = parse_recipe(
        DEMO_RECIPE,
        ["--dataset_name", str(TRAIN), "--eval_fraction", str(fraction), "--seed", str(seed)],
        check_device=False,
    )
    data = select_data(recipe)
    return [_row(r) for r in data.train["messages"]], [_row(r) for r in data.eval["messages"]], data.eval_from


def _row(messages) -> str:
    return json.dumps(messages, ensure_ascii=False, sort_keys=True)


def test_the_holdout_has_its_share_of_rows_and_shares_none_with_train():
    rows = [_row(json.loads(line)["messages"]) for line in TRAIN.read_text(encoding="utf-8").splitlines()]
    assert len(set(rows)) == len(rows)  # distinct rows, so counting them by content is exact
    for fraction in (0.1, 0.25):
        train, held, eval_from = held_out(fraction)
        assert len(held) == math.ceil(fraction * len(rows))  # datasets rounds the test share up
        assert len(train) == len(rows) - len(held)
        assert not set(train) & set(held)
        assert sorted(train + held) == sorted(rows)
        assert eval_from == f"{fraction:g} of train held out (eval_fraction)"


def test_the_seed_decides_the_holdout():
    train, held, _ = held_out(0.1, seed=42)
    assert held_out(0.1, seed=42)[:2] == (train, held)  # the same rows, in the same order
    other = held_out(0.1, seed=7)[1]
    assert set(other) != set(held)
