"""Loading adapters and models for inference, batched and streamed generation, and the chat CLI."""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from eeve_sft.errors import UserError
from eeve_sft.inference import answer, loading
from eeve_sft.inference.answer import AnswerStreamer, chat_loop, generate, generate_batch
from eeve_sft.inference.loading import DEFAULT_BASE_MODEL, load_for_inference, resolve_model_source
from eeve_sft.inference.sampling import SamplingConfig
from helpers import DEMO_MODEL, QUESTIONS, REPO, cli_error, make_adapter, run_script

EOS, PAD = 2048, 2  # the demo model's <|im_end|> and </s>
GREEDY = {"do_sample": False, "max_new_tokens": 10}


@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> Path:
    return make_adapter(tmp_path_factory.mktemp("run") / "final")


@pytest.fixture(scope="module")
def loaded(adapter):
    return load_for_inference(adapter, device="cpu")


def test_sources(adapter, monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    source = resolve_model_source(adapter)
    assert (source.kind, source.base) == ("adapter", "assets/demo-model")
    assert resolve_model_source(DEMO_MODEL).kind == "model"
    assert resolve_model_source(None) == loading.ModelSource(DEFAULT_BASE_MODEL, "model", DEFAULT_BASE_MODEL)

    # From elsewhere, the relative base is found under the adapter's parent directories.
    repo = tmp_path / "checkout"
    (repo / "assets").mkdir(parents=True)
    (repo / "assets" / "demo-model").symlink_to(DEMO_MODEL)
    moved = make_adapter(repo / "outputs" / "run" / "final")
    monkeypatch.chdir(tmp_path)
    assert resolve_model_source(moved).base == str(repo / "assets" / "demo-model")


def test_loaded_model_stops_on_every_stop_id_and_pads_with_s(loaded):
    model, tokenizer = loaded
    assert model.generation_config.eos_token_id == [EOS, PAD]
    assert (tokenizer.pad_token_id, tokenizer.padding_side) == (PAD, "left")
    assert not model.training and model.dtype == torch.float32
    assert type(model).__name__ == "LlamaForCausalLM"  # the adapter merged into the full-precision weights


def test_merged_adapter_answers_as_the_unmerged_one(adapter, loaded):
    """Generation merges an adapter into float32 weights: the greedy tokens of the adapter kept separate, 48 deep."""
    merged, tokenizer = loaded
    unmerged, _ = load_for_inference(adapter, device="cpu", merge_adapter=False)
    base, _ = load_for_inference(DEMO_MODEL, device="cpu")
    assert type(unmerged).__name__ == "PeftModelForCausalLM"
    settings = {"do_sample": False, "max_new_tokens": 48, "progress": False}
    expected = generate_batch(unmerged, tokenizer, QUESTIONS, **settings)
    assert generate_batch(merged, tokenizer, QUESTIONS, **settings) == expected
    assert generate_batch(base, tokenizer, QUESTIONS, **settings) != expected  # the merge carried the adapter


def test_batch_is_left_padded_and_matches_one_by_one(loaded, monkeypatch):
    from eeve_sft.inference import generation

    model, tokenizer = loaded
    seen = []
    real_loop = generation.decode_static

    def spy(model, input_ids, attention_mask, *args, **kwargs):
        seen.append((input_ids.clone(), attention_mask.clone()))
        return real_loop(model, input_ids, attention_mask, *args, **kwargs)

    monkeypatch.setattr(generation, "decode_static", spy)
    batched = generate_batch(model, tokenizer, QUESTIONS, batch_size=3, **GREEDY)
    ids, mask = seen[0]
    short = int(mask.sum(1).argmin())
    padding = int((mask[short] == 0).sum())
    assert padding > 0 and mask[short, :padding].eq(0).all() and ids[short, :padding].eq(PAD).all()
    assert ids[short, padding] == tokenizer.bos_token_id  # the prompt follows the padding: left padding

    one_by_one = [generate_batch(model, tokenizer, [q], **GREEDY)[0] for q in QUESTIONS]
    assert batched == one_by_one  # padding changes nothing under greedy decoding
    assert [r.text for r in batched] == [generate(model, tokenizer, q, **GREEDY) for q in QUESTIONS]
    assert all(r.new_tokens == 10 and r.hit_length_limit for r in batched)  # random weights never stop


def bias_head(model, head: torch.nn.Linear, token: int, bias: float) -> None:
    """Give `model` a copy of `head` that adds `bias` to the logit of `token`."""
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    biased.weight.data.copy_(head.weight.data)
    biased.bias.data.zero_()
    biased.bias.data[token] = bias
    model.lm_head = biased


@pytest.mark.parametrize("stop_id", [EOS, PAD])
def test_generation_stops_on_each_stop_id(adapter, stop_id):
    model, tokenizer = load_for_inference(adapter, device="cpu")
    bias_head(model, model.lm_head, stop_id, 1e4)  # the model's first token is always this stop id
    [result] = generate_batch(model, tokenizer, QUESTIONS[:1], **GREEDY)
    assert result.stopped_on_eos and result.new_tokens == 0 and result.text == ""


def test_answer_is_cut_at_the_first_stop_and_stripped(loaded):
    _, tokenizer = loaded
    words = tokenizer.encode(" 네 좋아요", add_special_tokens=False)
    result = answer._answer(tokenizer, [*words, EOS, *words, PAD], {EOS, PAD})
    assert (result.text, result.stopped_on_eos, result.new_tokens) == ("네 좋아요", True, len(words))
    assert answer._answer(tokenizer, words, {EOS, PAD}).hit_length_limit


def test_sampling_is_reproducible_with_a_seed(loaded):
    model, tokenizer = loaded
    sampled = [generate(model, tokenizer, QUESTIONS[0], max_new_tokens=12, seed=7, temperature=1.5) for _ in range(2)]
    assert sampled[0] == sampled[1]
    config = SamplingConfig(do_sample=False).generation_config(tokenizer)
    # greedy states the values under which sampling settings do nothing, so no saved default is merged in
    assert not config.do_sample and (config.temperature, config.top_p, config.top_k) == (1.0, 1.0, 50)
    defaults = SamplingConfig().generation_config(tokenizer)
    assert (
        defaults.temperature,
        defaults.top_p,
        defaults.top_k,
        defaults.repetition_penalty,
        defaults.max_new_tokens,
    ) == (0.7, 0.9, 50, 1.1, 512)
    with pytest.raises(UserError, match="top_p"):
        SamplingConfig(top_p=0)


def test_streamer_prints_the_answer_without_the_leading_space(loaded):
    model, tokenizer = loaded
    out = io.StringIO()
    answer = generate(model, tokenizer, QUESTIONS[0], streamer=AnswerStreamer(tokenizer, out), **GREEDY)
    assert out.getvalue() == answer + "\n"

    out = io.StringIO()
    streamer = AnswerStreamer(tokenizer, out)
    streamer.on_finalized_text(" 네,")
    streamer.on_finalized_text(" 알겠습니다.", stream_end=True)
    assert out.getvalue() == "네, 알겠습니다.\n"


def test_chat_keeps_history_resets_and_exits(loaded, monkeypatch):
    model, tokenizer = loaded
    calls = []
    real = answer.generate

    def recording(model_, tokenizer_, messages, **kwargs):
        calls.append([m["content"] for m in messages])
        return real(model_, tokenizer_, messages, **kwargs)

    monkeypatch.setattr(answer, "generate", recording)
    lines = iter(["밥 먹었어?", "", "뭐 먹었어?", "/reset", "안녕", "/exit", "never read"])
    out = io.StringIO()
    final = chat_loop(
        model,
        tokenizer,
        SamplingConfig(max_new_tokens=4, do_sample=False),
        system_prompt="존댓말로.",
        read=lambda _: next(lines),
        out=out,
    )
    assert calls[0] == ["존댓말로.", "밥 먹었어?"]
    assert calls[1][:2] == ["존댓말로.", "밥 먹었어?"] and calls[1][3] == "뭐 먹었어?" and len(calls[1]) == 4
    assert calls[2] == ["존댓말로.", "안녕"]  # /reset dropped the earlier turns, kept the system prompt
    assert [m["role"] for m in final] == ["system", "user", "assistant"]
    assert out.getvalue().count("EEVE> ") == 3 and "(new conversation)" in out.getvalue()

    lines = iter(["안녕"])  # end of input (Ctrl-D) ends the chat too

    def read(_):
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    assert len(chat_loop(model, tokenizer, SamplingConfig(max_new_tokens=2), read=read, out=io.StringIO())) == 2


def test_chat_cli_answers_one_prompt(demo_run):
    model, tokenizer = load_for_inference(demo_run / "final", device="cpu")
    question = [{"role": "user", "content": "밥 먹었어?"}]
    expected = generate(model, tokenizer, question, max_new_tokens=8, do_sample=False)
    result = run_script(
        sys.executable,
        "scripts/chat.py",
        "--model-path",
        str(demo_run / "final"),
        "--prompt",
        "밥 먹었어?",
        "--greedy",
        "--max-new-tokens",
        "8",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected + "\n"


def test_greedy_on_a_merged_model_does_not_warn_about_its_sampling_defaults(tmp_path):
    """A merged model saves the chat's sampling defaults (temperature 0.7, top-p 0.9) in generation_config.json;
    greedy decoding must neither use them nor draw transformers' warning that they are ignored."""
    from transformers import AutoTokenizer

    from eeve_sft.inference.export import merged_generation_config

    merged = tmp_path / "merged"
    shutil.copytree(DEMO_MODEL, merged)
    merged_generation_config(AutoTokenizer.from_pretrained(merged)).save_pretrained(merged)
    assert json.loads((merged / "generation_config.json").read_text())["temperature"] == 0.7
    model, tokenizer = load_for_inference(DEMO_MODEL, device="cpu")
    question = [{"role": "user", "content": "밥 먹었어?"}]
    expected = generate(model, tokenizer, question, max_new_tokens=6, do_sample=False)
    args = ("--prompt", "밥 먹었어?", "--greedy", "--max-new-tokens", "6")
    result = run_script(sys.executable, "scripts/chat.py", "--model-path", str(merged), *args)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected + "\n"
    assert "temperature" not in result.stderr and "top_p" not in result.stderr, result.stderr


def test_chat_cli_bad_input(capsys, tmp_path, adapter):
    not_a_model = tmp_path / "notes"
    not_a_model.mkdir()
    (not_a_model / "readme.txt").write_text("hello")
    assert "is not a model or adapter" in cli_error(capsys, "chat", ["--model-path", str(not_a_model), "--prompt", "x"])
    missing = str(tmp_path / "outputs" / "run" / "final")
    line = cli_error(capsys, "chat", ["--model-path", missing, "--prompt", "x"])
    assert line == f"error: model path not found: {missing}"
    run = tmp_path / "run"  # a training run's folder given for its adapter
    (run / "checkpoint-4").mkdir(parents=True)
    (run / "recipe.yaml").write_text("lora_r: 8\n", encoding="utf-8")
    line = cli_error(capsys, "chat", ["--model-path", str(run), "--prompt", "x"])
    assert line.endswith(f"it is a training run's folder: pass {run / 'checkpoint-4'}")
    (run / "final").mkdir()
    line = cli_error(capsys, "chat", ["--model-path", str(run), "--prompt", "x"])
    assert line == (
        f"error: {run} is not a model or adapter: it has no adapter_config.json or config.json; "
        f"it is a training run's folder: pass {run / 'final'}"
    )

    orphan = tmp_path / "orphan"
    orphan.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (orphan / name).write_bytes((adapter / name).read_bytes())
    config = json.loads((orphan / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "/models/gone/eeve"
    (orphan / "adapter_config.json").write_text(json.dumps(config))
    line = cli_error(capsys, "chat", ["--model-path", str(orphan), "--prompt", "x"])
    assert "base model '/models/gone/eeve' not found" in line

    if not torch.cuda.is_available():
        line = cli_error(capsys, "chat", ["--model-path", str(adapter), "--load-in-4bit", "--prompt", "x"])
        assert "needs a CUDA GPU" in line
    assert cli_error(capsys, "chat", ["--model-path", str(adapter), "--prompt", "  "]) == "error: --prompt is empty"


def test_fast_path_matches_plain_generate_token_for_token(loaded, monkeypatch):
    """Static cache, one cache length, every batch filled to the same rows: the greedy tokens of plain generate."""
    from eeve_sft.inference import generation
    from eeve_sft.template import encode_prompt, pad_token_id, stop_token_ids

    model, tokenizer = loaded
    conversations = [
        *QUESTIONS,
        [{"role": "user", "content": "뭐 해?"}],
        [{"role": "user", "content": "파이썬에서 리스트 뒤집는 법 알려줘"}],
    ]
    prompts = [encode_prompt(tokenizer, c) for c in conversations]
    config = SamplingConfig(max_new_tokens=12, do_sample=False, repetition_penalty=1.0).generation_config(tokenizer)
    plain = []
    for prompt in prompts:  # the reference: transformers' plain generate, one prompt at a time, nothing padded
        output = model.generate(
            input_ids=torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=int),
            generation_config=config,
        )
        plain.append(output[0, len(prompt) :].tolist())

    calls = []
    real_loop = generation.decode_static

    def spy(model, input_ids, attention_mask, config, cache_len, plan, **kwargs):
        calls.append({"input_ids": input_ids, "config": config, "cache_len": cache_len, **kwargs})
        return real_loop(model, input_ids, attention_mask, config, cache_len, plan, **kwargs)

    monkeypatch.setattr(generation, "decode_static", spy)
    fast = generation.generate_ids(
        model, prompts, config, pad_token_id(tokenizer), set(stop_token_ids(tokenizer)), batch_size=2, progress=False
    )
    assert fast == plain
    assert [c["input_ids"].shape[0] for c in calls] == [2, 2, 2]  # 5 prompts: the last batch is filled to 2 rows
    assert {c["config"].cache_implementation for c in calls} == {"static"}
    longest = max(map(len, prompts))
    assert {c["cache_len"] for c in calls} == {generation.cache_length(longest, 12)}
    assert calls[-1]["finished_after_first"].tolist() == [False, True]  # the copy is finished after one token
    widths = [c["input_ids"].shape[1] for c in calls]
    assert widths == sorted(widths, reverse=True)  # longest prompts first


@pytest.mark.parametrize("check_every", [1, 3, 16])
def test_decoding_loop_stops_rows_as_generate_does(adapter, check_every):
    """Rows that stop at different steps, stop flags read every `check_every` steps: generate's ids, lengths
    and streamed tokens, repetition penalty and the forced minimum length included."""
    from transformers.generation.streamers import BaseStreamer

    from eeve_sft.inference import generation
    from eeve_sft.template import encode_prompt

    class Recorder(BaseStreamer):
        def __init__(self):
            self.values = []

        def put(self, value):
            self.values.append(value.tolist())

        def end(self):
            self.values.append("end")

    model, tokenizer = load_for_inference(adapter, device="cpu")
    head = model.lm_head
    prompts = [encode_prompt(tokenizer, q) for q in QUESTIONS]
    input_ids, mask = generation.left_pad(prompts, PAD, "cpu")
    cache_len = generation.cache_length(input_ids.shape[1], 24)
    plan = generation.decode_plan(model)
    seen = set()
    # A bias towards <|im_end|>: one row stops while the others run to the limit, or all stop early.
    for bias, penalty, minimum in ((0.5, 1.0, 0), (0.5, 1.3, 0), (1.0, 1.0, 0), (1.0, 1.3, 3)):
        bias_head(model, head, EOS, bias)
        config = SamplingConfig(
            max_new_tokens=24, min_new_tokens=minimum, do_sample=False, repetition_penalty=penalty
        ).generation_config(tokenizer)
        fast = generation.fast_generation_config(config, cache_len, plan)
        expected, got = Recorder(), Recorder()
        with torch.inference_mode():
            reference = model.generate(
                input_ids=input_ids, attention_mask=mask, generation_config=config, streamer=expected
            )
            ours = generation.decode_static(
                model, input_ids, mask, fast, cache_len, plan, streamer=got, check_every=check_every
            )
        stopped_at = [row.index(EOS) if EOS in row else None for row in reference[:, input_ids.shape[1] :].tolist()]
        seen.add("mixed" if None in stopped_at else "all stopped")
        assert all(s is None or s >= minimum for s in stopped_at)
        assert ours.tolist() == reference.tolist()  # same tokens, same length: the step where the last row stopped
        assert got.values == expected.values
    assert seen == {"mixed", "all stopped"}


def test_batch_rows_and_cache_buckets():
    from eeve_sft.inference.generation import CACHE_BUCKET, batch_rows, cache_length

    assert batch_rows("auto", 224, 256) == 224  # one batch when memory holds every prompt
    assert batch_rows(None, 300, 256) == 152  # spread evenly: 2 batches of 152 rather than 256 + 44
    assert batch_rows("auto", 5, 8) == 5 and batch_rows(8, 3, 1) == 3 and batch_rows(64, 224, 1) == 64
    for bad in (0, -1, "eight", True):
        with pytest.raises(UserError, match="batch size"):
            batch_rows(bad, 10, 8)
    assert cache_length(1, 512) == CACHE_BUCKET + 512
    assert cache_length(CACHE_BUCKET, 10) == CACHE_BUCKET + 10 and cache_length(CACHE_BUCKET + 1, 10) == 138


def test_cpu_plan_says_once_that_it_does_not_compile(loaded, capsys, monkeypatch):
    from eeve_sft.inference import generation

    model, tokenizer = loaded
    monkeypatch.setattr(generation, "_notes_printed", set())
    plan = generation.decode_plan(model)
    assert not plan.compiled and plan.static and "without torch.compile" in plan.note
    for _ in range(2):
        generate_batch(model, tokenizer, QUESTIONS[:1], progress=False, **GREEDY)
    assert capsys.readouterr().err.strip().splitlines() == [plan.note]  # one line, not one per call
    assert generation.auto_batch_size(model, 600, 100) == generation.CPU_BATCH


def test_decoding_attention_in_place_equals_repeated_heads():
    """One decoding step through sdpa_gqa_decode gives the logits of transformers' own SDPA attention."""
    from transformers import AutoModelForCausalLM

    from eeve_sft.inference.generation import GQA_DECODE_ATTENTION, use_gqa_decode_attention

    model = AutoModelForCausalLM.from_pretrained(DEMO_MODEL).eval()
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # grouped: the case that matters
    ids = torch.tensor([[1, 200, 300, 400, 500], [2, 2, 1, 600, 700]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])

    def last_step_logits():
        with torch.no_grad():
            prefix = model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], use_cache=True)
            step = model(input_ids=ids[:, -1:], attention_mask=mask, past_key_values=prefix.past_key_values)
        return step.logits

    reference = last_step_logits()
    use_gqa_decode_attention(model)
    assert model.config._attn_implementation == GQA_DECODE_ATTENTION
    torch.testing.assert_close(last_step_logits(), reference, rtol=1e-5, atol=1e-5)


def test_progress_counts_stopped_prompts_and_generated_tokens():
    from eeve_sft.inference.generation import ProgressStreamer

    class Bar:
        prompts, tokens = 0, 0

        def update(self, n):
            self.prompts += n

        def add_tokens(self, n):
            self.tokens += n

    bar = Bar()
    streamer = ProgressStreamer(bar, {EOS, PAD}, real_rows=2)  # a third row only fills the batch
    streamer.put(torch.tensor([[1, 5, 6], [1, 7, 8], [1, 7, 8]]))  # the prompt: not counted
    streamer.put(torch.tensor([10, 11, 11]))
    streamer.put(torch.tensor([EOS, 12, 12]))  # row 0 stops
    streamer.put(torch.tensor([PAD, 13, 13]))  # row 0 now gets padding, which is not generated text
    assert (bar.prompts, bar.tokens) == (1, 4)
    streamer.end()  # row 1 hit the length limit
    assert bar.prompts == 2
