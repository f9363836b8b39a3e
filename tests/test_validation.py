"""The validator recipes and mix files share: key suggestions and how a wrong value is reported."""

from __future__ import annotations

import pytest

from eeve_sft.data_prep.mix import Mix
from eeve_sft.validation import SchemaError, build, closest_key, shown


def test_closest_key_prefers_the_same_family_then_a_prefix():
    keys = ["lora_r", "local_rank", "learning_rate", "max_length"]
    assert closest_key("lora_rank", keys) == "lora_r"
    assert closest_key("learning_rat", keys) == "learning_rate"
    assert closest_key("max_len", keys) == "max_length"
    assert closest_key("zzz", keys) is None


def test_values_are_quoted_the_same_way_everywhere():
    assert shown(None) == "null"
    assert shown({"q": 1}) == "a mapping"
    assert shown("fast") == "'fast'"
    assert shown("x" * 100) == repr("x" * 100)[:57] + "..."


SOURCE = {"hub": "a/b", "columns": {"messages": "m"}}


def test_mix_file_reports_null_and_mapping_values_like_a_recipe():
    with pytest.raises(SchemaError, match=r"^'seed' expects an integer, got null$"):
        build(Mix, {"sources": [SOURCE], "seed": None})
    with pytest.raises(SchemaError, match=r"^'sources\[0\].weight' expects a number, got a mapping$"):
        build(Mix, {"sources": [dict(SOURCE, weight={"x": 1})]})
    assert build(Mix, {"sources": [SOURCE], "seed": 7}).seed == 7


def test_mix_keys_set_by_the_loader_are_unknown_to_the_file():
    with pytest.raises(SchemaError, match=r"unknown key 'mix_sha256'"):
        build(Mix, {"sources": [SOURCE], "mix_sha256": "0" * 64})
