"""The mix file: defaults, and one-line errors for every kind of mistake."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from eeve_sft.data_prep.mix import load_mix
from eeve_sft.errors import UserError
from helpers import FIXTURES, fixture_sources, write_mix

REPO = Path(__file__).resolve().parents[2]


def minimal(**overrides) -> dict:
    mix = {
        "sources": [
            {"path": str(FIXTURES / "alpaca.jsonl"), "columns": {"instruction": "instruction", "output": "output"}}
        ]
    }
    mix.update(overrides)
    return mix


def error_of(tmp_path: Path, settings: dict) -> str:
    with pytest.raises(UserError) as caught:
        load_mix(write_mix(tmp_path, settings))
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_minimal_mix_gets_defaults_and_derived_names(tmp_path):
    mix = load_mix(write_mix(tmp_path, minimal(), name="tiny_mix.yaml"))
    assert mix.name == "tiny_mix"
    source = mix.sources[0]
    assert source.name == "alpaca" and source.format == "jsonl" and source.weight == 1.0
    assert mix.quality.length.min_assistant_chars == 10
    assert mix.speech_level.banmal == "drop" and mix.speech_level.neutral == "keep"
    assert mix.split.eval_rows(1000) == 20  # default fraction 0.02
    assert len(mix.mix_sha256) == 64


def test_relative_source_paths_resolve_against_the_mix_folder(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "rows.jsonl").write_text('{"q": "질문", "a": "답"}\n', encoding="utf-8")
    settings = {"sources": [{"path": "raw/rows.jsonl", "columns": {"instruction": "q", "output": "a"}}]}
    mix = load_mix(write_mix(tmp_path, settings))
    assert Path(mix.sources[0].path) == (tmp_path / "raw" / "rows.jsonl").resolve()


def test_shipped_mixes_load():
    full = load_mix(REPO / "data_prep" / "mixes" / "banmal_100k.yaml")
    assert [s.hub for s in full.sources] == [
        "beomi/KoAlpaca-v1.1a",
        "nlpai-lab/kullm-v2",
        "lemon-mint/smol-koreantalk",
        "maywell/ko_wikidata_QA",
    ]
    assert full.sample.size == 100_000
    example = load_mix(REPO / "data_prep" / "mixes" / "local_example.yaml")
    assert all(Path(str(s.path)).is_file() for s in example.sources)
    # A shipped example reads shipped data, never the test suite's files (a user's copy may have no tests/).
    for mix_file in (REPO / "data_prep" / "mixes").glob("*.yaml"):
        for source in yaml.safe_load(mix_file.read_text(encoding="utf-8"))["sources"]:
            if "path" in source:
                resolved = (mix_file.parent / source["path"]).resolve()
                assert (REPO / "tests") not in resolved.parents, (mix_file, source["path"])


def test_unknown_top_level_key_suggests_the_closest(tmp_path):
    message = error_of(tmp_path, minimal(sampel={"size": 10}))
    assert "unknown key 'sampel'" in message and "did you mean 'sample'" in message


def test_unknown_nested_key_names_its_path_and_suggestion(tmp_path):
    message = error_of(tmp_path, minimal(quality={"lenght": {"min_user_chars": 3}}))
    assert "'quality.lenght'" in message and "did you mean 'length'" in message


def test_unknown_key_inside_a_source(tmp_path):
    settings = {"sources": [dict(fixture_sources()[0], wieght=2)]}
    assert "did you mean 'weight'" in error_of(tmp_path, settings)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (minimal(seed="forty-two"), "'seed' expects an integer, got 'forty-two'"),
        (minimal(quality={"length": {"min_user_chars": 2.5}}), "'quality.length.min_user_chars' expects an integer"),
        (minimal(clean={"enabled": "yes"}), "'clean.enabled' expects true or false"),
        (minimal(speech_level={"banmal": "maybe"}), "'speech_level.banmal' expects one of keep, drop"),
        (minimal(dedup={"near": {"threshold": 1.5}}), "'dedup.near.threshold' must be at most 1"),
        (minimal(banmal_rewrite={"share": -0.1}), "'banmal_rewrite.share' must be at least 0"),
        (minimal(sources="all of them"), "'sources' expects a list"),
        (minimal(split={"eval_size": 10, "eval_fraction": 0.1}), "sets both 'eval_size' and 'eval_fraction'"),
        (minimal(quality={"length": {"min_user_chars": 50, "max_user_chars": 10}}), "is above"),
    ],
)
def test_wrong_types_and_values_name_the_key(tmp_path, settings, expected):
    assert expected in error_of(tmp_path, settings)


def test_source_needs_exactly_one_of_hub_and_path(tmp_path):
    both = {"hub": "a/b", "path": str(FIXTURES / "qa.csv"), "columns": {"instruction": "q", "output": "a"}}
    assert "exactly one of 'hub'" in error_of(tmp_path, {"sources": [both]})
    neither = {"columns": {"instruction": "q", "output": "a"}}
    assert "exactly one of 'hub'" in error_of(tmp_path, {"sources": [neither]})


def test_column_mapping_needs_one_complete_style(tmp_path):
    no_output = {"path": str(FIXTURES / "qa.csv"), "columns": {"instruction": "question"}}
    assert "needs 'instruction' and 'output'" in error_of(tmp_path, {"sources": [no_output]})
    both = {"path": str(FIXTURES / "qa.csv"), "columns": {"messages": "m", "output": "answer"}}
    assert "use one style" in error_of(tmp_path, {"sources": [both]})
    bad_alias = {"path": str(FIXTURES / "chat.json"), "columns": {"messages": "m", "role_aliases": {"bot": "robot"}}}
    assert "roles are system, user, assistant" in error_of(tmp_path, {"sources": [bad_alias]})


def test_missing_files_are_reported(tmp_path):
    with pytest.raises(UserError, match="mix file not found"):
        load_mix(tmp_path / "nope.yaml")
    gone = {"path": "missing.jsonl", "columns": {"instruction": "q", "output": "a"}}
    assert "file not found" in error_of(tmp_path, {"sources": [gone]})


def test_unknown_extension_asks_for_a_format(tmp_path):
    odd = tmp_path / "rows.txt"
    odd.write_text("{}\n", encoding="utf-8")
    settings = {"sources": [{"path": str(odd), "columns": {"instruction": "q", "output": "a"}}]}
    assert "set 'sources[0].format'" in error_of(tmp_path, settings)
    settings["sources"][0]["format"] = "jsonl"
    assert load_mix(write_mix(tmp_path, settings)).sources[0].format == "jsonl"


def test_duplicate_source_names_and_empty_sources_fail(tmp_path):
    one = fixture_sources()[2]
    assert "two sources are named 'csv_qa'" in error_of(tmp_path, {"sources": [one, dict(one)]})
    assert "at least one source" in error_of(tmp_path, {"sources": []})


def test_invalid_yaml_and_empty_file_fail_with_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: [unclosed\n", encoding="utf-8")
    with pytest.raises(UserError, match="not valid YAML"):
        load_mix(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(UserError, match="empty"):
        load_mix(empty)
