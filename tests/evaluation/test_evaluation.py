"""Politeness evaluation: prompt files, scoring, eval loss as training computes it, reports, lm-eval wiring."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch

from eeve_sft.errors import UserError
from eeve_sft.evaluation import lm_eval, politeness
from eeve_sft.evaluation import prompts as prompt_sets
from eeve_sft.evaluation.lm_eval import lm_eval_request, run_lm_eval
from eeve_sft.evaluation.loss import EvalData, eval_loss, load_eval_data
from eeve_sft.evaluation.markdown import render_markdown
from eeve_sft.evaluation.politeness import EvalSettings, expand_model_paths, run_evaluation, score_answers
from eeve_sft.evaluation.prompts import load_prompts
from eeve_sft.inference.answer import GenerationResult
from eeve_sft.inference.loading import load_for_inference, resolve_model_source
from eeve_sft.inference.sampling import SamplingConfig
from helpers import REPO, cli_error, make_adapter, run_script

TOOLS = REPO / "tests" / "data" / "tools"
PROMPTS = TOOLS / "prompts_small.jsonl"
FAST = EvalSettings(sampling=SamplingConfig(max_new_tokens=8, do_sample=False, repetition_penalty=1.0), batch_size=4)


@pytest.fixture(autouse=True)
def from_repo_root(monkeypatch):
    monkeypatch.chdir(REPO)  # adapters name their base relative to the repository root, as recipes do


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    return make_adapter(tmp_path_factory.mktemp("run") / "final")


def test_prompt_files_load():
    prompts = load_prompts(PROMPTS)
    assert [p.id for p in prompts] == ["s1", "s2", "s3", "s4", "s5"]  # the blank line is skipped
    assert prompts[4].category == "multiturn" and len(prompts[4].messages) == 3
    shipped = load_prompts(prompt_sets.default_prompts_path())
    assert len(shipped) > 100 and {p.category for p in shipped} >= {"everyday", "coding", "multiturn"}


USER = {"role": "user", "content": "뭐 해?"}


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "holds no prompts"),
        ("\n\n", "holds no prompts"),
        (
            '{"id": "a", "messages": [{"role": "user", "content": "뭐 해?"}]}\n{"id": "b", "messages": [\n',
            "line 2: not valid JSON",
        ),
        ('["a", "b"]\n', "line 1: expected a JSON object, got an array"),
        (json.dumps({"id": None, "messages": [USER]}), "line 1: 'id' must be"),
        (
            json.dumps({"id": "2", "messages": [USER]}) + "\n" + json.dumps({"messages": [USER]}),
            "line 2: id '2' already used on line 1",
        ),  # a default id (the line number) collides with a given one
        (json.dumps({"id": "a", "category": "x"}), "line 1: 'messages' must be a non-empty list"),
        (
            json.dumps({"id": "a", "messages": [USER, {"role": "system", "content": "존댓말로."}]}),
            "line 1: the last message must be a user turn",
        ),
        (
            json.dumps({"id": "a", "messages": [USER, {"role": "assistant", "content": " "}]}),
            "line 1: as a training row: message 1 \\(assistant\\) has empty",
        ),
        (json.dumps({"id": "a", "messages": [{"role": "user", "content": "  "}]}), "empty or non-text content"),
        (json.dumps({"id": "a", "messages": [{"role": "bot", "content": "hi"}]}), "role 'bot'"),
        (
            json.dumps({"id": "a", "messages": [USER]}) + "\n" + json.dumps({"id": "a", "messages": [USER]}),
            "line 2: id 'a' already used on line 1",
        ),
    ],
)
def test_bad_prompt_files(tmp_path, text, message):
    path = tmp_path / "prompts.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserError, match=message):
        load_prompts(path)


def test_prompts_without_ids_and_plain_text_files(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        "\n".join([json.dumps({"messages": [USER]}), "", json.dumps({"id": "x", "messages": [USER]})]), encoding="utf-8"
    )
    prompts = load_prompts(rows)
    assert [(p.id, p.category) for p in prompts] == [("1", "uncategorized"), ("x", "uncategorized")]

    text = tmp_path / "prompts.txt"
    text.write_text("밥 먹었어?\n\n  내일 뭐 해?  \n", encoding="utf-8")
    prompts = load_prompts(text)
    assert [p.id for p in prompts] == ["1", "3"]  # blank line skipped, ids are line numbers
    assert prompts[1].messages == [{"role": "user", "content": "내일 뭐 해?"}]
    assert prompt_sets.prompt_set_id(prompts) != prompt_sets.prompt_set_id(prompts[:1])
    assert prompt_sets.prompt_set_id(load_prompts(text)) == prompt_sets.prompt_set_id(prompts)

    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps({"messages": [USER]}) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"broken.jsonl line 2: not valid JSON"):
        load_prompts(broken)


def test_training_rows_are_prompts_without_their_answer():
    """An eval split in the training format is a prompt file: each row's final assistant answer is left out."""
    demo_eval = REPO / "data" / "demo" / "eval.jsonl"
    rows = [json.loads(line) for line in demo_eval.read_text(encoding="utf-8").splitlines() if line.strip()]
    prompts = load_prompts(demo_eval)
    assert len(prompts) == len(rows)
    assert [p.messages for p in prompts] == [row["messages"][:-1] for row in rows]
    assert all(p.messages[-1]["role"] == "user" for p in prompts)


def test_scores_count_every_label_category_and_cut_off_answer():
    prompts = load_prompts(PROMPTS)
    texts = [
        ("네, 오늘은 김치찌개를 추천드려요.", True, 9),
        ("주말에는 산책을 해 보세요.", True, 7),
        ("reversed() 쓰면 돼.", True, 5),
        ("git commit --amend", False, 8),  # no sentence ending at all, and cut off by the length limit
        ("네, 넣으셔도 됩니다. 근데 너무 많이 넣지 마.", True, 12),
    ]
    results = [GenerationResult(text, stopped, n) for text, stopped, n in texts]
    answers, figures = score_answers(prompts, results)
    assert [a.label for a in answers] == ["polite", "polite", "banmal", "neutral", "mixed"]
    assert figures["counts"] == {"polite": 2, "banmal": 1, "mixed": 1, "neutral": 1}
    assert figures["polite_rate"] == pytest.approx(2 / 5)
    assert figures["length_limit_hits"] == 1
    assert figures["mean_answer_tokens"] == pytest.approx(41 / 5)
    assert figures["mean_answer_chars"] == pytest.approx(sum(len(t) for t, _, _ in texts) / 5)
    assert figures["per_category"] == {
        "coding": {"prompts": 2, "polite": 0, "polite_rate": 0.0},
        "everyday": {"prompts": 2, "polite": 2, "polite_rate": 1.0},
        "multiturn": {"prompts": 1, "polite": 0, "polite_rate": 0.0},
    }
    assert answers[4].prompt == "계란도 넣어도 돼?"  # the turn being answered


def test_eval_loss_is_the_mean_over_assistant_tokens(adapter):
    model, tokenizer = load_for_inference(adapter, device="cpu")
    conversations = [
        [{"role": "user", "content": "밥 먹었어?"}, {"role": "assistant", "content": "네, 먹었습니다."}],
        [
            {"role": "user", "content": "뭐 해?"},
            {"role": "assistant", "content": "책 읽고 있어요."},
            {"role": "user", "content": "무슨 책?"},
            {"role": "assistant", "content": "소설책이에요. 재미있어요."},
        ],
        [
            {"role": "system", "content": "존댓말로 답하세요."},
            {"role": "user", "content": "안녕"},
            {"role": "assistant", "content": "안녕하세요!"},
        ],
    ]
    total, count = 0.0, 0
    for messages in conversations:  # reference: the model's own causal-LM loss, one conversation at a time
        encoded = tokenizer.apply_chat_template(
            messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        ids = torch.tensor([encoded["input_ids"]])
        labels = torch.where(torch.tensor([encoded["assistant_masks"]]) == 1, ids, -100)
        with torch.no_grad():
            loss = model(input_ids=ids, labels=labels).loss.item()
        n = int((labels[0, 1:] != -100).sum())
        assert n == sum(encoded["assistant_masks"])  # every answer token and its eos, nothing else
        total, count = total + loss * n, count + n
    data = EvalData(conversations, max_length=None, assistant_only_loss=True, description="three")
    loss, tokens = eval_loss(model, tokenizer, data, batch_size=2)  # padded batches change nothing
    assert tokens == count
    assert loss == pytest.approx(total / count, rel=1e-5)


def test_eval_loss_of_the_final_adapter_matches_training(demo_run):
    summary = json.loads((demo_run / "summary.json").read_text())
    data = load_eval_data(demo_run)  # the run dir's recipe.yaml: same split, template and masking as training
    model, tokenizer = load_for_inference(demo_run / "final", device="cpu")
    loss, _ = eval_loss(model, tokenizer, data, batch_size=8)
    # final/ is the best checkpoint; the trainer averages per-batch means, we average over tokens.
    assert loss == pytest.approx(summary["best_eval_loss"], rel=1e-3)


def test_base_keyword_stands_for_the_adapters_base(adapter, tmp_path):
    sources = expand_model_paths(["base", str(adapter)])
    assert (sources[0].kind, sources[0].path) == ("model", "assets/demo-model")
    with pytest.raises(UserError, match="must name exactly one; they name none"):
        expand_model_paths(["base", "assets/demo-model"])
    with pytest.raises(UserError, match="given twice"):
        expand_model_paths([str(adapter), str(adapter)])


def test_results_go_to_the_runs_eval_dir_by_default(tmp_path):
    runs = []
    for name in ("a", "b"):
        (tmp_path / name / "final").mkdir(parents=True)
        (tmp_path / name / "checkpoint-5").mkdir()
        (tmp_path / name / "recipe.yaml").write_text("lora_r: 8\n")
        runs.append(tmp_path / name)
    a, b = runs

    def source(path):
        return politeness.ModelSource(str(path), "adapter", str(path), "assets/demo-model")

    base = politeness.ModelSource("assets/demo-model", "model", "assets/demo-model")
    assert politeness.default_output_dir([base, source(a / "checkpoint-5"), source(a / "final")]) == a / "eval"
    assert politeness.default_output_dir([source(a / "final"), source(b / "final")]) == Path("outputs/eval")
    assert politeness.default_output_dir([base]) == Path("outputs/eval")


def test_run_evaluation_writes_json_and_markdown(adapter, tmp_path):
    written = run_evaluation(["base", str(adapter)], PROMPTS, tmp_path / "ev", FAST)
    assert re.fullmatch(r"eval_prompts_small_5p_[0-9a-f]{8}\.json", written.name) and written.parent == tmp_path / "ev"
    document = json.loads(written.read_text(encoding="utf-8"))
    assert document["num_prompts"] == 5 and document["generation"]["do_sample"] is False
    assert document["prompt_set"] == prompt_sets.prompt_set_id(load_prompts(PROMPTS))
    base, tuned = document["models"]
    assert base["model_path"] == tuned["base_model"] == "assets/demo-model" and tuned["kind"] == "adapter"
    for model in document["models"]:
        assert [a["id"] for a in model["answers"]] == ["s1", "s2", "s3", "s4", "s5"]
        assert sum(model["counts"].values()) == 5
        assert model["polite_rate"] == model["counts"]["polite"] / 5
        assert model["length_limit_hits"] == sum(not a["stopped_on_eos"] for a in model["answers"])
        assert model["eval_loss"] is None
    report = written.with_suffix(".md").read_text(encoding="utf-8")
    assert "| model | 존댓말 rate | prompts |" in report and f"| {tuned['name']} |" in report
    assert all(m["num_prompts"] == 5 for m in document["models"])
    assert f"| {tuned['name']} | {100 * tuned['polite_rate']:.1f}% | 5 |" in report  # the rate with its count
    assert "## 존댓말 rate per category" in report and "| multiturn | 1 |" in report
    assert "## Sample answers" in report


def test_every_evaluation_keeps_its_own_files(adapter, tmp_path):
    """A second evaluation on fewer prompts or other settings is written beside the first, never over it; the
    same evaluation again is refused before any model loads, unless asked to replace it."""
    out = tmp_path / "ev"
    first = run_evaluation([str(adapter)], PROMPTS, out, FAST)
    before = first.read_bytes()
    limited = run_evaluation([str(adapter)], PROMPTS, out, FAST, prompt_limit=2)
    longer = EvalSettings(sampling=SamplingConfig(max_new_tokens=4, do_sample=False, repetition_penalty=1.0))
    other_settings = run_evaluation([str(adapter)], PROMPTS, out, longer, prompt_limit=2)
    assert len({first, limited, other_settings}) == 3 and first.read_bytes() == before
    assert limited.name.startswith("eval_prompts_small_2p_")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        n for f in (first, limited, other_settings) for n in (f.name, f.with_suffix(".md").name)
    )
    with pytest.raises(UserError, match=rf"{re.escape(str(first))} already holds this evaluation .*--overwrite"):
        run_evaluation([str(adapter)], PROMPTS, out, FAST)
    assert first.read_bytes() == before
    assert run_evaluation([str(adapter)], PROMPTS, out, FAST, overwrite=True) == first


def test_markdown_escapes_answers_and_marks_cut_offs():
    answer = {
        "id": "p1",
        "category": "c",
        "prompt": "표 | 그려 줘",
        "answer": "| a | b |\n|---|---|",
        "label": "neutral",
        "stopped_on_eos": False,
        "new_tokens": 8,
    }
    model = {
        "name": "m",
        "num_prompts": 1,
        "counts": {"polite": 0, "banmal": 0, "mixed": 0, "neutral": 1},
        "polite_rate": 0.0,
        "length_limit_hits": 1,
        "mean_answer_chars": 19.0,
        "mean_answer_tokens": 8.0,
        "eval_loss": None,
        "per_category": {"c": {"prompts": 1, "polite": 0, "polite_rate": 0.0}},
        "answers": [answer],
    }
    document = {
        "num_prompts": 1,
        "prompts_file": "p.jsonl",
        "eval_data": None,
        "models": [model],
        "generation": {**SamplingConfig(do_sample=False).__dict__, "batch_size": 1, "load_in_4bit": False},
    }
    report = render_markdown(document)
    assert "Q: 표 \\| 그려 줘" in report and "A: \\| a \\| b \\| \\|---\\|---\\| *(hit the length limit)*" in report
    assert "greedy" in report


def test_evaluate_cli_side_by_side_with_eval_loss(demo_run, tmp_path):
    best = Path(json.loads((demo_run / "summary.json").read_text())["best_model_checkpoint"]).name
    checkpoint = next(c for c in demo_run.glob("checkpoint-*") if c.name != best)  # final/ is the best one
    result = run_script(
        sys.executable,
        "scripts/evaluate.py",
        "--model-path",
        "base",
        str(checkpoint),
        str(demo_run / "final"),
        "--prompts",
        str(PROMPTS),
        "--max-new-tokens",
        "8",
        "--batch-size",
        "4",
        "--recipe",
        str(demo_run),
        "--loss-limit",
        "8",
        "--output",
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    (written,) = tmp_path.glob("eval_prompts_small_5p_*.json")
    assert f"written: {written}, {written.with_suffix('.md')}" in result.stdout
    document = json.loads(written.read_text(encoding="utf-8"))
    names = [m["name"] for m in document["models"]]
    assert names == ["assets/demo-model", f"run/{checkpoint.name}", "run/final"]
    assert all(isinstance(m["eval_loss"], float) and m["eval_loss_tokens"] > 0 for m in document["models"])
    base, other, final = (m["eval_loss"] for m in document["models"])
    assert len({base, other, final}) == 3
    assert "| run/final |" in result.stdout  # the table is printed too


def test_evaluate_cli_bad_input(capsys, adapter, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    line = cli_error(capsys, "evaluate", ["--model-path", str(adapter), "--prompts", str(empty)])
    assert line == f"error: prompt file {empty} holds no prompts"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "messages": "뭐 해?"}\n')
    line = cli_error(capsys, "evaluate", ["--model-path", str(adapter), "--prompts", str(bad)])
    assert line == f"error: {bad} line 1: 'messages' must be a non-empty list"
    line = cli_error(capsys, "evaluate", ["--model-path", str(tmp_path), "--prompts", str(PROMPTS)])
    assert "is not a model or adapter" in line
    line = cli_error(capsys, "evaluate", ["--model-path", str(adapter), "--prompts", str(tmp_path / "none.jsonl")])
    assert "prompt file not found" in line
    line = cli_error(
        capsys, "evaluate", ["--model-path", str(adapter), "--prompts", str(PROMPTS), "--recipe", str(tmp_path)]
    )
    assert "has no recipe.yaml" in line
    line = cli_error(capsys, "evaluate", ["--model-path", str(adapter), "--prompts", str(PROMPTS), "--batch-size", "x"])
    assert line == "error: --batch-size must be a whole number or 'auto', got 'x'"
    line = cli_error(capsys, "evaluate", ["--model-path", str(adapter), "--prompts", str(PROMPTS), "--batch-size", "0"])
    assert line == "error: --batch-size must be at least 1"


def test_lm_eval_arguments(adapter):
    source = resolve_model_source(adapter)
    request = lm_eval_request(source, ["kobest", "haerae"], "cuda", "bfloat16", 16, limit=100)
    assert request["model"] == "hf" and request["tasks"] == ["kobest", "haerae"]
    assert request["model_args"] == {
        "pretrained": "assets/demo-model",
        "peft": str(adapter),
        "tokenizer": str(adapter),
        "device": "cuda",
        "dtype": "bfloat16",
    }
    assert (request["batch_size"], request["limit"], request["include_path"]) == (16, 100, None)
    merged = lm_eval_request(resolve_model_source("assets/demo-model"), ["kmmlu"], "cpu", "float32", 1)
    assert merged["model_args"] == {"pretrained": "assets/demo-model", "device": "cpu", "dtype": "float32"}
    with pytest.raises(UserError, match="task directory not found"):
        lm_eval_request(source, ["x"], "cpu", "float32", 1, include_path="no/such/dir")


def test_lm_eval_missing_package_is_one_line(monkeypatch, capsys, adapter):
    monkeypatch.setattr(lm_eval.importlib.util, "find_spec", lambda name: None)
    argv = ["--model-path", str(adapter), "--prompts", str(PROMPTS), "--lm-eval", "kobest"]
    assert cli_error(capsys, "evaluate", argv) == (
        "error: --lm-eval needs lm-evaluation-harness, which is not installed: pip install 'eeve-sft[lmeval]'"
    )


def test_lm_eval_runs_a_local_task(adapter, tmp_path, monkeypatch):
    import lm_eval as harness

    evaluated = []
    simple_evaluate = harness.simple_evaluate
    monkeypatch.setattr(
        harness, "simple_evaluate", lambda **kw: evaluated.append(simple_evaluate(**kw)) or evaluated[0]
    )
    source = resolve_model_source(adapter)
    request = lm_eval_request(
        source, ["ko_polite_choice"], "cpu", "float32", 2, include_path=str(TOOLS / "lm_eval_tasks")
    )
    results = run_lm_eval({**request, "log_samples": True})  # keeps what lm-eval scored for each answer
    assert set(results) == {"ko_polite_choice"}
    assert results["ko_polite_choice"]["sample_len"] == 4
    # Each answer's log-likelihood is the adapter's (scored here with transformers and PEFT on the same texts),
    # and the accuracy is the share of questions whose labelled answer scores highest.
    model, tokenizer = load_for_inference(adapter, device="cpu")
    correct = []
    for sample in evaluated[0]["samples"]["ko_polite_choice"]:
        ours = [continuation_log_likelihood(model, tokenizer, *pair) for pair in sample["arguments"]]
        theirs = [float(resp[0][0]) for resp in sample["resps"]]
        assert ours == pytest.approx(theirs, abs=1e-4)
        correct.append(max(range(len(ours)), key=ours.__getitem__) == sample["doc"]["label"])
    assert results["ko_polite_choice"]["acc,none"] == sum(correct) / len(correct)


def continuation_log_likelihood(model, tokenizer, context: str, continuation: str) -> float:
    """log p(continuation | context), tokenized as lm-evaluation-harness does for a causal model: the whole text
    and the context encoded, the continuation being the tokens after the context's."""
    whole = tokenizer.encode(context + continuation)
    start = len(tokenizer.encode(context))
    with torch.no_grad():
        logits = model(torch.tensor([whole])).logits[0].float().log_softmax(-1)
    return float(sum(logits[i - 1, whole[i]] for i in range(start, len(whole))))
