"""Reading local sources: every format, unreadable rows kept as counted BadRows, the missing-column check."""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eeve_sft.data_prep import sources
from eeve_sft.data_prep.mix import Columns, Source
from eeve_sft.data_prep.sources import BadRow, check_columns, load_source
from eeve_sft.errors import UserError
from helpers import FIXTURES

QA = Columns(instruction="q", output="a")


def source(path, fmt: str, columns: Columns = QA, **extra) -> Source:
    return Source(columns=columns, name="s", path=str(path), format=fmt, **extra)


def test_jsonl_keeps_bad_lines_as_counted_rows_with_line_numbers(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(
        '{"q": "질문 하나", "a": "답 하나"}\n\n{broken\n'.encode()
        + b"\xff\xfe not utf-8\n"
        + '[1, 2]\n{"q": "질문 둘", "a": "답 둘", "extra": 1}\n'.encode()
        + b"[" * 100_000
        + b"\n"
    )
    loaded = load_source(source(path, "jsonl"), seed=0)
    rows = list(loaded.iter_rows())
    assert [n for n, _ in rows] == [1, 3, 4, 5, 6, 7]  # the blank line 2 is no row
    assert rows[0][1] == {"q": "질문 하나", "a": "답 하나"}
    reasons = [r.reason for _, r in rows if isinstance(r, BadRow)]
    assert reasons == ["invalid_json", "invalid_utf8", "not_an_object", "invalid_json"]  # the last nests too deep
    assert loaded.columns == ["q", "a", "extra"]


def test_json_array_and_json_lines_in_a_json_file(tmp_path):
    array = tmp_path / "array.json"
    array.write_text('[{"q": "질문", "a": "답"}, "not an object"]', encoding="utf-8")
    rows = [r for _, r in load_source(source(array, "json"), seed=0).iter_rows()]
    assert rows[0] == {"q": "질문", "a": "답"} and isinstance(rows[1], BadRow)
    lines = tmp_path / "lines.json"
    lines.write_text('{"q": "하나", "a": "1"}\n{"q": "둘", "a": "2"}\n', encoding="utf-8")
    assert len(load_source(source(lines, "json"), seed=0)) == 2


def test_csv_reads_header_and_quoted_cells():
    loaded = load_source(source(FIXTURES / "qa.csv", "csv", Columns(instruction="question", output="answer")), seed=0)
    assert loaded.columns == ["question", "answer"]
    assert loaded.rows[1]["question"] == "봄에 가기 좋은 여행지를 추천해 주세요."
    assert loaded.rows[2]["answer"] == ""


def test_parquet_rows_and_nested_messages(tmp_path):
    path = tmp_path / "chats.parquet"
    table = pa.table(
        {
            "messages": [[{"role": "user", "content": "질문"}, {"role": "assistant", "content": "답변"}]],
            "id": [7],
        }
    )
    pq.write_table(table, path)
    loaded = load_source(source(path, "parquet", Columns(messages="messages")), seed=0)
    assert loaded.columns == ["messages", "id"]
    assert loaded.rows[0]["messages"][1] == {"role": "assistant", "content": "답변"}


def test_unreadable_parquet_is_a_user_error(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet")
    with pytest.raises(UserError, match="cannot read .* as Parquet"):
        load_source(source(path, "parquet"), seed=0)


def test_max_rows_takes_a_seeded_subset_and_keeps_original_numbers(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(f'{{"q": "질문 {i}", "a": "답"}}\n' for i in range(100)), encoding="utf-8")
    spec = source(path, "jsonl", max_rows=10)
    first, again = load_source(spec, seed=1), load_source(spec, seed=1)
    other = load_source(spec, seed=2)
    assert len(first) == 10 and first.rows_available == 100
    assert list(first.numbers) == list(again.numbers) != list(other.numbers)
    assert all(row["q"] == f"질문 {n - 1}" for n, row in first.iter_rows())


def test_missing_column_names_the_column_and_the_columns_that_exist():
    spec = source(FIXTURES / "qa.csv", "csv", Columns(instruction="question", output="reply"))
    loaded = load_source(spec, seed=0)
    with pytest.raises(UserError) as caught:
        check_columns(loaded)
    assert (
        str(caught.value)
        == "source 's' ("
        + str(FIXTURES / "qa.csv")
        + "): column 'reply' (columns.output) not found; it has: question, answer"
    )


def test_missing_messages_column_is_caught_too():
    spec = dataclasses.replace(source(FIXTURES / "chat.json", "json"), columns=Columns(messages="messages"))
    with pytest.raises(UserError, match="column 'messages' .* it has: conversations"):
        check_columns(load_source(spec, seed=0))


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "is empty: it holds no rows"),
        ("\n\n", "is empty: it holds no rows"),
        ("{oops\n[1]\n", "none of its 2 rows has a column to read (line 1: invalid_json)"),
        ("{}\n", "none of its 1 rows has a column to read"),
    ],
)
def test_an_empty_or_unreadable_source_says_so_instead_of_naming_no_columns(tmp_path, text, message):
    path = tmp_path / "rows.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserError) as caught:
        check_columns(load_source(source(path, "jsonl"), seed=0))
    assert str(caught.value) == f"source 's' ({path}): {message}".replace("): is empty", ") is empty")


def test_hub_source_goes_through_load_dataset_with_its_settings(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, name=None, split=None, revision=None):
        calls.append((path, name, split, revision))
        return datasets.Dataset.from_list([{"instruction": f"질문 {i}", "output": "답", "url": ""} for i in range(50)])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(sources, "dataset_hub_problem", lambda: None)  # as with the Hub reachable
    spec = Source(
        columns=Columns(instruction="instruction", output="output"),
        name="koalpaca",
        hub="beomi/KoAlpaca-v1.1a",
        config="default",
        split="train",
        revision="abc123",
        max_rows=5,
    )
    loaded = load_source(spec, seed=0)
    assert calls == [("beomi/KoAlpaca-v1.1a", "default", "train", "abc123")]
    assert loaded.columns == ["instruction", "output", "url"] and loaded.rows_available == 50
    assert [row["instruction"] for _, row in loaded.iter_rows()] == [f"질문 {n - 1}" for n in loaded.numbers]
    assert len(loaded) == 5


def test_unreachable_hub_dataset_is_a_one_line_user_error(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'a/b' on the Hub\n(offline)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.setattr(sources, "dataset_hub_problem", lambda: None)  # the Hub answers, the dataset fails
    spec = Source(columns=QA, name="remote", hub="a/b")
    with pytest.raises(
        UserError, match=r"^cannot load Hub dataset 'a/b': Couldn't reach 'a/b' on the Hub \(offline\)$"
    ):
        load_source(spec, seed=0)
