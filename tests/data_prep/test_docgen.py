"""Training rows generated from documents: question parsing, the answer filters on hand-written rows, the whole
pipeline with a deterministic generator and with the demo model, bad inputs, and the rows as a mix source."""

from __future__ import annotations

import json
import re
import shutil
import sys

import pytest

from eeve_sft.data_prep.docgen import (
    ANSWER_SYSTEM,
    DocGenConfig,
    generate_from_docs,
    groundedness,
    load_config,
    parse_questions,
)
from eeve_sft.errors import UserError
from eeve_sft.inference.answer import GenerationResult
from eeve_sft.retrieval import Hit, RetrievalIndex, build_index, format_context
from helpers import DEMO_MODEL, REPO, error_line, run_script, train_demo

DOCS = REPO / "data" / "wms_docs"


@pytest.fixture(scope="module")
def wms_index(tmp_path_factory) -> RetrievalIndex:
    out = tmp_path_factory.mktemp("idx") / "wms"
    build_index(DOCS, out, chunk_chars=800, overlap=100)
    return RetrievalIndex(out)


class ScriptedModel:
    """Writes questions and answers the way an instruction model would, from the prompt text alone.

    Questions: two numbered polite questions, built from the first sentence of the quoted chunk, with one fixed
    duplicate. Answers: chosen by the question, to exercise each filter: the first retrieved sentence in 존댓말
    (kept), a 반말 answer, an answer about something else, and an answer cut off without eos.
    """

    def __init__(self) -> None:
        self.calls: list[list[list[dict]]] = []

    def __call__(self, conversations: list[list[dict]], sampling: dict) -> list[GenerationResult]:
        self.calls.append(conversations)
        return [self.answer(c) for c in conversations]

    def answer(self, conversation: list[dict]) -> GenerationResult:
        user = conversation[-1]["content"]
        passages = [line[2:] for line in user.split("\n") if line.startswith("> ") and not line.startswith("> [")]
        if conversation[0]["content"] != ANSWER_SYSTEM:
            topic = passages[0].split()[0]
            return GenerationResult(
                f"1. {topic} 관련 규칙은 어떻게 되나요?\n2. 문서에서 가장 중요한 점이 뭔가요?", True, 30
            )
        question = user.rsplit("\n\n", 1)[1]
        first = re.split(r"(?<=다\.)\s", passages[0])[0]
        if "중요한" in question:
            return GenerationResult("그건 나도 잘 몰라. 알아서 해.", True, 12)
        if question.startswith(("WMS", "입고")):
            return GenerationResult("오늘 점심 메뉴는 김치찌개와 불고기가 좋겠습니다.", True, 15)
        if question.startswith("비밀번호는"):
            return GenerationResult(first, False, 512)
        return GenerationResult(f"문서에 따르면 {first}", True, 40)


def test_parse_questions_strips_list_marks_and_keeps_korean_lines():
    text = "1. 냉장 상품은 몇 번 도크로 받나요?\n2) 검수는 누가 하나요?\n- Q: x\n\nHere are questions:\n질문 3: 검수는 누가 하나요?"
    assert parse_questions(text, 5) == ["냉장 상품은 몇 번 도크로 받나요?", "검수는 누가 하나요?"]
    assert parse_questions(text, 1) == ["냉장 상품은 몇 번 도크로 받나요?"]
    assert parse_questions("no korean here", 3) == []


def test_groundedness_on_hand_written_answers():
    context = "입고 도크는 1번부터 6번까지이며, 냉장 상품은 항상 5번과 6번 도크로 받습니다."
    assert groundedness("냉장 상품은 5번과 6번 도크로 받습니다.", context) == 1.0
    assert groundedness("냉동 상품은 지게차로 옮긴 뒤 창고 밖에 둡니다.", context) < 0.3
    partly = groundedness("냉장 상품은 5번 도크로 받고, 지게차 운전자가 서명합니다.", context)
    assert 0.3 < partly < 1.0
    assert groundedness("네.", context) == 0.0  # no content word: nothing to ground


def test_config_file_and_flags(tmp_path):
    path = tmp_path / "docgen.yaml"
    path.write_text("min_groundedness: 0.8\nquestions_per_chunk: 3\n", encoding="utf-8")
    config = load_config(path, questions_per_chunk=4, banmal_share=None)
    assert (config.min_groundedness, config.questions_per_chunk, config.banmal_share) == (0.8, 4, 0.5)
    path.write_text("min_groundednes: 0.8\n", encoding="utf-8")
    with pytest.raises(UserError, match="did you mean 'min_groundedness'"):
        load_config(path)
    with pytest.raises(UserError, match="banmal_share' must be at most 1"):
        load_config(None, banmal_share=1.5)


def test_pipeline_filters_counts_and_rows(tmp_path, wms_index):
    from eeve_sft.speech_level import classify

    model = ScriptedModel()
    config = DocGenConfig(questions_per_chunk=2, top_k=2, banmal_share=0.5)
    result = generate_from_docs(wms_index, model, config, tmp_path / "out", limit=12, model_name="scripted")
    stats = result.stats
    rows = [json.loads(line) for line in (tmp_path / "out" / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    removed = stats["stages"]["removed"]
    assert removed["questions"]["duplicate_question"] == 11  # the second question repeats for every chunk
    assert removed["answers"]["answer_banmal"] == 1
    assert removed["answers"]["not_grounded"] == 2
    assert removed["answers"]["cut_off_without_eos"] == 1
    assert stats["counts"]["questions"] == stats["stages"]["passed"]["questions"] == 13
    assert stats["counts"]["questions"] - sum(removed["answers"].values()) == len(rows) == stats["counts"]["rows"]
    assert len(rows) >= 3
    for row in rows:
        user, answer = row["messages"][0]["content"], row["messages"][1]["content"]
        assert set(row) == {"messages", "sources"} and [m["role"] for m in row["messages"]] == ["user", "assistant"]
        question = user.rsplit("\n\n", 1)[1]
        assert user.startswith("> [1] ")
        assert classify(answer) == "polite" and answer.startswith("문서에 따르면")
        assert len(row["sources"]) == 2 and {"source", "headings", "start", "end"} == set(row["sources"][0])
        assert classify(question) in ("polite", "banmal")
    banmal = [r for r in rows if classify(r["messages"][0]["content"].rsplit("\n\n", 1)[1]) == "banmal"]
    assert len(banmal) == stats["counts"]["banmal_questions"] == stats["banmal_rewrite"]["rewritten"]
    assert stats["banmal_rewrite"]["target"] == round(0.5 * len(rows)) and len(banmal) >= 1
    # The user turn is exactly the chat --rag layout of the recorded sources before the (rewritten) question.
    by_span = {(c.source, c.start, c.end): c for c in wms_index.chunks}
    for row in rows:
        user = row["messages"][0]["content"]
        hits = [Hit(n, 0.0, by_span[(s["source"], s["start"], s["end"])]) for n, s in enumerate(row["sources"], 1)]
        assert user == format_context(user.rsplit("\n\n", 1)[1], hits)
    card = (tmp_path / "out" / "data_card.md").read_text(encoding="utf-8")
    assert "| answers | not_grounded |" in card and "| questions | duplicate_question | 11 |" in card
    assert stats["generated_tokens"] == {"question": 12 * 30, "answer": 40 * len(rows) + 12 + 15 * 2 + 512}
    # Two batches of generation: questions, then answers with the grounding instruction as the system turn.
    assert len(model.calls) == 2 and all(c[0]["content"] == ANSWER_SYSTEM for c in model.calls[1])


def test_output_folder_is_refused_when_full(tmp_path, wms_index):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x", encoding="utf-8")
    with pytest.raises(UserError, match="not empty"):
        generate_from_docs(wms_index, ScriptedModel(), DocGenConfig(), tmp_path / "out", limit=1)
    assert (tmp_path / "out" / "keep.txt").exists()


def test_generated_rows_are_a_mix_source(tmp_path, wms_index):
    from eeve_sft.data_prep import build_dataset
    from eeve_sft.data_prep.mix import parse_mix

    generate_from_docs(
        wms_index,
        ScriptedModel(),
        DocGenConfig(top_k=2),
        tmp_path / "data" / "wms_domain",
        limit=20,
        model_name="scripted",
    )
    generated = (tmp_path / "data" / "wms_domain" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    mix_text = (REPO / "data_prep" / "mixes" / "wms_domain.yaml").read_text(encoding="utf-8")
    mix = parse_mix(mix_text, tmp_path / "data_prep" / "mixes" / "wms_domain.yaml")
    names = [s.name for s in mix.sources]
    assert names[-1] == "wms_domain" and {"koalpaca", "kullm_v2"} <= set(names)
    assert mix.sources[-1].path == str((tmp_path / "data" / "wms_domain" / "train.jsonl").resolve())
    local = parse_mix(
        "sources:\n  - name: wms_domain\n    path: data/wms_domain/train.jsonl\n    columns: {messages: messages}\n"
        "sample: {enabled: false}\nsplit: {enabled: false}\nbanmal_rewrite: {enabled: false}\n",
        tmp_path / "local.yaml",
    )
    result = build_dataset(local, tmp_path / "built", show_progress=False)
    from eeve_sft.training.data import check_conversations, load_splits

    splits = load_splits(str(tmp_path / "data" / "wms_domain"))  # the folder also works as a recipe's dataset_name
    assert set(splits) == {"train"} and len(splits["train"]) == len(generated)
    check_conversations(splits["train"], "train")
    # Rows with `sources` read as conversations and pass every general stage; only the scripted model's repeated
    # answers (same top passage, same first sentence) are caught as near duplicates.
    removed = result.stats["removed"]
    assert set(removed) <= {"dedup"}
    assert result.stats["output"]["train"] + sum(removed.get("dedup", {}).values()) == len(generated) > 0


def test_demo_model_end_to_end_keeps_no_row_and_writes_nothing(tmp_path, wms_index):
    """The random demo model writes gibberish: every question it produced is accounted for by a filter in the
    one error line, and no empty dataset is left behind for a recipe to train on."""
    config = tmp_path / "fast.yaml"
    config.write_text("question_max_new_tokens: 24\nanswer_max_new_tokens: 24\nbatch_size: 4\n", encoding="utf-8")
    result = run_script(
        sys.executable,
        "data_prep/generate_from_docs.py",
        str(wms_index.dir),
        "--model-path",
        str(DEMO_MODEL),
        "--output",
        str(tmp_path / "out"),
        "--limit",
        "3",
        "--config",
        str(config),
        "--device",
        "cpu",
        timeout=600,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    line = error_line(result)
    match = re.fullmatch(
        r"error: no generated row passed the filters \(3 chunks, (\d+) questions kept\); removed: (.+); "
        rf"nothing written to {re.escape(str(tmp_path / 'out'))}",
        line,
    )
    assert match, line
    answers = re.search(r"answers: ([^;]+)", match.group(2))
    removed = sum(int(n) for n in re.findall(r" (\d+)", answers.group(1))) if answers else 0
    assert removed == int(match.group(1))  # every question kept was removed by one answer filter
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_no_row_kept_is_an_error_naming_each_filter(tmp_path, wms_index):
    def banmal_only(conversations, sampling):  # the same two questions for every chunk, every answer in 반말
        answering = conversations[0][0]["content"] == ANSWER_SYSTEM
        text = "그건 문서에 나와 있어. 알아서 해." if answering else "1. 입고는 어떻게 하나요?\n2. 도크는 몇 번이에요?"
        return [GenerationResult(text, True, 9)] * len(conversations)

    with pytest.raises(UserError) as raised:
        generate_from_docs(wms_index, banmal_only, DocGenConfig(), tmp_path / "out", limit=2)
    assert str(raised.value) == (
        "no generated row passed the filters (2 chunks, 2 questions kept); removed: questions: duplicate_question 2; "
        f"answers: answer_banmal 2; nothing written to {tmp_path / 'out'}"
    )
    assert not (tmp_path / "out").exists()


def test_written_pairs_go_through_retrieval_and_the_answer_filters(tmp_path, wms_index):
    """No model: each written pair gets its passages from the index and meets the filters generated rows meet."""
    from eeve_sft.data_prep.docgen import load_pairs

    pairs = tmp_path / "pairs.jsonl"
    rows = [
        ("냉장 상품은 몇 번 도크로 받나요?", "냉장 상품은 항상 5번과 6번 도크로 받습니다."),
        ("냉장 상품은 몇 번 도크로 받나요", "5번 도크입니다."),  # the same question again
        ("비밀번호 규칙이 어떻게 되나요?", "비밀번호는 10자 이상이어야 하고 영문, 숫자, 특수문자를 모두 넣어야 해."),
        ("폐기 상품은 언제 수거하나요?", "점심 메뉴로는 김치찌개와 불고기를 추천드립니다."),
        ("휴직하면 계정은 어떻게 돼요?", "정지됩니다."),
    ]
    pairs.write_text(
        "".join(json.dumps({"question": q, "answer": a}, ensure_ascii=False) + "\n" for q, a in rows), encoding="utf-8"
    )
    config = DocGenConfig(top_k=2, banmal_share=0.0)
    result = generate_from_docs(wms_index, None, config, tmp_path / "out", pairs=load_pairs(pairs), model_name="none")
    stats = result.stats
    assert stats["counts"] | {"chunks": 0} == {
        "chunks": 0,
        "written_pairs": 5,
        "questions": 4,
        "rows": 1,
        "banmal_questions": 0,
    }
    assert stats["stages"]["removed"] == {
        "questions": {"duplicate_question": 1},
        "answers": {"answer_banmal": 1, "answer_length": 1, "not_grounded": 1},
    }
    (row,) = [json.loads(line) for line in (tmp_path / "out" / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert row["messages"][1]["content"] == rows[0][1] and stats["generated_tokens"] == {"question": 0, "answer": 0}
    by_span = {(c.source, c.start, c.end): c for c in wms_index.chunks}
    hits = [Hit(n, 0.0, by_span[(s["source"], s["start"], s["end"])]) for n, s in enumerate(row["sources"], 1)]
    assert row["messages"][0]["content"] == format_context(rows[0][0], hits) and hits[0].chunk.source == "inbound.md"
    assert "5 written question/answer pairs" in (tmp_path / "out" / "data_card.md").read_text(encoding="utf-8")

    pairs.write_text('{"question": "도크는?"}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"pairs.jsonl line 1: needs non-empty string 'question' and 'answer'"):
        load_pairs(pairs)
    pairs.write_text("\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"is empty: it holds no question/answer pair"):
        load_pairs(pairs)


def test_the_documents_flow_runs_offline_to_an_adapter_and_chat_rag(tmp_path, wms_index):
    """Index, rows from the shipped written pairs, the shipped local mix, a short training run and chat --rag with
    the adapter: every step on files the project ships, with no Hub and no instruction model."""
    from eeve_sft.data_prep import build_dataset
    from eeve_sft.data_prep.mix import load_mix

    # The mix reads ../../data/...: lay out a copy of those folders around a copy of the mix file.
    (tmp_path / "data_prep" / "mixes").mkdir(parents=True)
    shutil.copy(REPO / "data_prep" / "mixes" / "wms_domain_local.yaml", tmp_path / "data_prep" / "mixes")
    shutil.copytree(REPO / "data" / "demo", tmp_path / "data" / "demo")
    domain = tmp_path / "data" / "wms_domain_local"
    made = run_script(
        sys.executable,
        "data_prep/generate_from_docs.py",
        str(wms_index.dir),
        "--pairs",
        "data/wms_pairs.jsonl",
        "--output",
        str(domain),
    )
    assert made.returncode == 0, made.stderr[-3000:]
    pairs = (REPO / "data" / "wms_pairs.jsonl").read_text(encoding="utf-8").splitlines()
    assert made.stdout.startswith(f"wrote {len(pairs)} rows (")  # every shipped pair passes the filters

    mix = load_mix(tmp_path / "data_prep" / "mixes" / "wms_domain_local.yaml")
    built = build_dataset(mix, tmp_path / "mix", show_progress=False)
    assert built.stats["sources"]["wms_domain"]["train"] > 0 and built.stats["output"]["eval"] > 0

    run = tmp_path / "run"
    flags = ["--max_steps", "1", "--eval_strategy", "no", "--save_strategy", "no", "--max_length", "1024"]
    trained = train_demo(run, "--dataset_name", str(tmp_path / "mix"), *flags)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (run / "final" / "adapter_config.json").is_file()

    chat = run_script(
        sys.executable,
        "scripts/chat.py",
        "--model-path",
        str(run / "final"),
        "--rag",
        str(wms_index.dir),
        "--rag-top-k",
        "2",
        "--device",
        "cpu",
        "--greedy",
        "--max-new-tokens",
        "4",
        "--prompt",
        "냉장 상품은 몇 번 도크로 받아?",
    )
    assert chat.returncode == 0, chat.stderr[-3000:]
    assert any(line.strip().startswith("출처 [1] inbound.md") for line in chat.stdout.splitlines()), chat.stdout


@pytest.mark.parametrize(
    "model_path, message",
    [
        ("{tmp}", "is not a model or adapter"),
        ("{tmp}/nowhere/model", "model path not found"),
    ],
)
def test_model_path_that_is_not_a_model_is_one_line(tmp_path, wms_index, model_path, message):
    result = run_script(
        sys.executable,
        "data_prep/generate_from_docs.py",
        str(wms_index.dir),
        "--model-path",
        model_path.format(tmp=tmp_path),
        "--output",
        str(tmp_path / "out"),
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert not (tmp_path / "out").exists()
