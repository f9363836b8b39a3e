"""Merging an adapter into its base: same logits as the adapter, files a server needs, model card, Hub push."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from eeve_sft.inference.answer import generate
from eeve_sft.inference.export import merge_adapter, push_to_hub, render_model_card
from eeve_sft.inference.loading import load_for_inference, resolve_model_source
from eeve_sft.template import encode_prompt
from helpers import DEMO_MODEL, QUESTIONS, REPO, cli_error, load_script, make_adapter, run_script

EOS, PAD = 2048, 2


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    return make_adapter(tmp_path_factory.mktemp("run") / "final")


@pytest.fixture(autouse=True)
def from_repo_root(monkeypatch):
    monkeypatch.chdir(REPO)  # the adapter names its base relative to the repository root, as recipes do


def logits(model, tokenizer) -> torch.Tensor:
    ids = torch.tensor([encode_prompt(tokenizer, QUESTIONS[2])])
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def test_merged_float32_equals_the_adapter(adapter, tmp_path):
    out = merge_adapter(adapter, tmp_path / "merged", dtype="float32")
    adapted, tokenizer = load_for_inference(adapter, device="cpu", merge_adapter=False)
    merged = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(DEMO_MODEL)
    expected = logits(adapted, tokenizer)
    assert torch.allclose(logits(merged, tokenizer), expected, atol=1e-5, rtol=1e-5)
    assert (logits(base, tokenizer) - expected).abs().max() > 1e-2  # the adapter changes the model: the merge is real


def test_merged_bfloat16_within_bf16_tolerance(adapter, tmp_path):
    out = merge_adapter(adapter, tmp_path / "merged")  # bfloat16 by default
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert merged.dtype == torch.bfloat16
    adapted, tokenizer = load_for_inference(adapter, device="cpu", merge_adapter=False)
    reference = logits(adapted, tokenizer)
    adapted.to(torch.bfloat16)
    bf16_adapter = logits(adapted, tokenizer)
    got = logits(merged, tokenizer)
    scale = reference.abs().max()
    # bf16 keeps 8 bits of mantissa: both bf16 models stay within rounding distance of the fp32 adapter
    assert (got - reference).abs().max() <= 0.02 * scale
    assert (got - bf16_adapter).abs().max() <= 0.02 * scale


def test_merged_dir_is_ready_to_serve(adapter, tmp_path):
    out = merge_adapter(adapter, tmp_path / "merged", dtype="float32")
    names = {p.name for p in out.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "chat_template.jinja",
        "README.md",
    } <= names
    assert not names & {"adapter_config.json", "adapter_model.safetensors"}
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [EOS, PAD] and generation["pad_token_id"] == PAD
    assert (generation["temperature"], generation["top_p"], generation["repetition_penalty"]) == (0.7, 0.9, 1.1)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template == AutoTokenizer.from_pretrained(adapter).chat_template

    # The merged model answers exactly as the adapter does.
    adapted = load_for_inference(adapter, device="cpu", merge_adapter=False)
    merged = load_for_inference(out, device="cpu")
    assert resolve_model_source(out).kind == "model"
    for question in QUESTIONS:
        assert generate(*merged, question, max_new_tokens=8, do_sample=False) == generate(
            *adapted, question, max_new_tokens=8, do_sample=False
        )


def test_a_failed_merge_keeps_the_existing_output_and_leaves_nothing_behind(adapter, tmp_path, monkeypatch):
    import eeve_sft.inference.export as export

    out = tmp_path / "merged"
    out.mkdir()
    (out / "keep.txt").write_text("previous export")

    def broken_card(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(export, "write_model_card", broken_card)
    with pytest.raises(OSError, match="disk full"):
        merge_adapter(adapter, out, dtype="float32", overwrite=True)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]


def test_model_card_from_the_training_run(demo_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(demo_run, run, ignore=shutil.ignore_patterns("checkpoint-*"))
    (run / "eval").mkdir()
    answers = {"polite": 5, "banmal": 1, "mixed": 1, "neutral": 1}
    model = {
        "name": "run/final",
        "model_path": str(run / "final"),
        "polite_rate": 5 / 8,
        "num_prompts": 8,
        "counts": answers,
        "length_limit_hits": 2,
        "mean_answer_chars": 81.25,
        "mean_answer_tokens": 40.5,
        "eval_loss": 1.2345,
    }
    (run / "eval" / "eval.json").write_text(json.dumps({"num_prompts": 8, "models": [model]}, ensure_ascii=False))

    card = render_model_card(run / "final", "assets/demo-model", repo_id="someone/eeve-polite")
    front = card.split("---")[1]
    assert "base_model: assets/demo-model" in front and "- ko" in front
    assert "# eeve-polite" in card
    assert "Dataset: `data/demo`" in card
    recipe = card.split("## Recipe")[1].split("## Evaluation")[0]
    assert "lora_r: 8" in recipe and "model_name_or_path: assets/demo-model" in recipe
    evaluation = card.split("## Evaluation")[1]
    assert "| run/final | 62.5% | 8 | 5 | 1 | 1 | 1 | 2 | 81.2 | 40.5 | 1.2345 |" in evaluation
    assert 'from_pretrained("someone/eeve-polite"' in card

    # Merging writes the card without pushing; it finds the run through the adapter's directory.
    out = merge_adapter(run / "final", tmp_path / "merged", dtype="float32")
    written = (out / "README.md").read_text(encoding="utf-8")
    assert "| run/final | 62.5%" in written and "someone/" not in written


def test_card_for_an_adapter_outside_a_run(adapter):
    card = render_model_card(adapter, "assets/demo-model")
    assert "The adapter's training run was not found." in card
    assert "No evaluation was found in the training run" in card


def test_push_uploads_the_folder_with_a_card_naming_the_repo(adapter, tmp_path):
    out = merge_adapter(adapter, tmp_path / "merged", dtype="float32")

    class FakeHub:
        calls = []

        def create_repo(self, repo_id, **kwargs):
            self.calls.append(("create_repo", repo_id, kwargs))
            return f"https://hub.example/{repo_id}"

        def upload_folder(self, **kwargs):
            self.calls.append(("upload_folder", kwargs["repo_id"], kwargs))
            assert 'from_pretrained("me/eeve-polite"' in (out / "README.md").read_text(encoding="utf-8")

    url = push_to_hub(out, "me/eeve-polite", adapter, "assets/demo-model", api=FakeHub())
    assert url == "https://hub.example/me/eeve-polite"
    (create, repo, create_kwargs), (upload, _, upload_kwargs) = FakeHub.calls
    assert (create, repo, upload) == ("create_repo", "me/eeve-polite", "upload_folder")
    assert create_kwargs["private"] and create_kwargs["exist_ok"]
    assert upload_kwargs["folder_path"] == str(out)


def test_merge_cli(demo_run, tmp_path):
    out = tmp_path / "merged"
    result = run_script(
        sys.executable, "scripts/merge_adapter.py", "--model-path", str(demo_run / "final"), "--output", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert AutoModelForCausalLM.from_pretrained(out).dtype == torch.bfloat16
    assert "base_model: assets/demo-model" in (out / "README.md").read_text(encoding="utf-8")


def test_merge_cli_bad_input(capsys, adapter, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    line = cli_error(capsys, "merge_adapter", ["--model-path", str(adapter), "--output", str(taken)])
    assert line == f"error: output directory {taken} is not empty; pass --overwrite to replace it"
    assert (taken / "keep.txt").read_text() == "mine"

    line = cli_error(capsys, "merge_adapter", ["--model-path", str(DEMO_MODEL), "--output", str(tmp_path / "m")])
    assert "is not a LoRA adapter" in line
    line = cli_error(capsys, "merge_adapter", ["--model-path", str(tmp_path), "--output", str(tmp_path / "m")])
    assert "is not a model or adapter" in line

    load_script("merge_adapter").main(
        ["--model-path", str(adapter), "--output", str(taken), "--overwrite", "--dtype", "float32"]
    )
    assert not (taken / "keep.txt").exists() and (taken / "model.safetensors").is_file()


def test_merged_folder_and_adapter_are_what_vllm_serves(tmp_path):
    from eeve_sft.inference.export import vllm_problems

    adapter = make_adapter(tmp_path / "run" / "final")
    assert vllm_problems(adapter) == []
    merged = merge_adapter(adapter, tmp_path / "merged", dtype="float32")
    assert vllm_problems(merged) == []
    generation = json.loads((merged / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [2048, 2]

    # What would break it: a saved head, a changed stop list, a missing template.
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "modules_to_save": ["lm_head"]}))
    assert vllm_problems(adapter) == ["adapter saves whole modules (lm_head): vLLM refuses it"]
    (merged / "generation_config.json").write_text(json.dumps({**generation, "eos_token_id": 2048}))
    (merged / "chat_template.jinja").unlink()
    assert [p.split(" ")[0] for p in vllm_problems(merged, stop_ids=[2048, 2])] == ["no", "generation_config.json"]


def test_shipped_recipes_train_no_whole_modules_except_the_demo():
    from eeve_sft.training.recipe import parse_recipe, recipe_classes

    saved = {}
    for recipe in sorted((REPO / "recipes").glob("*.yaml")):
        parsed = parse_recipe(recipe, check_device=False, classes=recipe_classes(recipe))
        saved[recipe.name] = parsed.model.lora_modules_to_save
    assert saved.pop("demo_cpu.yaml") == ["lm_head"]  # the random-weight demo trains its head: not for vLLM
    assert all(not modules for modules in saved.values()), saved
