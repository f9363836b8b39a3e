"""GGUF export: llama.cpp tokenizes every prompt as transformers does, the f16 file decodes greedily as the model
does, the chat template and the Ollama Modelfile render the project's text, vLLM readiness, and bad input."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch

from eeve_sft.evaluation.prompts import load_prompts
from eeve_sft.inference.gguf import (
    CONVERTER,
    LLAMA_CPP_PYTHON_VERSION,
    MODELFILE,
    export_gguf,
    find_tools,
    push_gguf,
    space_after_special,
)
from eeve_sft.inference.loading import load_for_inference
from eeve_sft.template import encode_prompt
from helpers import DEMO_MODEL, MULTI, QUESTIONS, REPO, SINGLE, cli_error, make_adapter, run_script

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python comes with the dev and gguf extras")
GREEDY_TOKENS = 32


def prompt_conversations() -> list[list[dict]]:
    """Every prompt of eval/prompts_banmal.jsonl and eval/wms_questions.jsonl, plus multi-turn conversations."""
    conversations = [p.messages for p in load_prompts(REPO / "eval/prompts_banmal.jsonl")]
    for line in (REPO / "eval/wms_questions.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            conversations.append([{"role": "user", "content": json.loads(line)["query"]}])
    conversations += [SINGLE + [{"role": "user", "content": "고마워!"}], MULTI + [{"role": "user", "content": "응"}]]
    return conversations


@pytest.fixture(scope="session")
def exported(shared_tmp):
    """The demo model with a LoRA adapter, exported once for the session as f16 and q8_0 (merged in float32, so
    the f16 file is compared with the adapter itself)."""
    from filelock import FileLock

    root = shared_tmp / "gguf-shared"
    with FileLock(str(shared_tmp / "gguf-shared.lock")):
        if not (root / "gguf" / MODELFILE).is_file():
            import shutil

            shutil.rmtree(root, ignore_errors=True)
            adapter = make_adapter(root / "run" / "final", base=str(DEMO_MODEL))
            export_gguf(adapter, root / "gguf", "f16,q8_0", merge_dtype="float32")
    return root


def load_gguf(path: Path, **kwargs):
    return llama_cpp.Llama(model_path=str(path), verbose=False, **kwargs)


def test_every_prompt_tokenizes_as_in_transformers(exported):
    _, tokenizer = load_for_inference(exported / "run" / "final", device="cpu")
    vocab = load_gguf(exported / "gguf" / "gguf-f16.gguf", vocab_only=True)
    conversations = prompt_conversations()
    assert len(conversations) == 224 + 53 + 2
    same = server = 0
    for messages in conversations:
        expected = encode_prompt(tokenizer, messages)
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        same += vocab.tokenize(text.encode(), add_bos=False, special=True) == expected
        # llama-server drops the template's leading "<s>" text and adds the bos token itself.
        rest = text.removeprefix(tokenizer.bos_token).encode()
        server += vocab.tokenize(rest, add_bos=True, special=True) == expected
    assert (same, server) == (len(conversations), len(conversations))


def same_ids(gguf_file: Path, tokenizer, conversations: list[list[dict]]) -> int:
    """How many `conversations` llama.cpp (reading `gguf_file`) tokenizes exactly as `tokenizer` does."""
    vocab = load_gguf(gguf_file, vocab_only=True)
    same = 0
    for messages in conversations:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        same += vocab.tokenize(text.encode(), add_bos=False, special=True) == encode_prompt(tokenizer, messages)
    return same


def convert_vocab(model_dir: Path, out_file: Path) -> Path:
    """llama.cpp's converter on `model_dir` as it is, vocabulary and metadata only."""
    import subprocess

    command = [sys.executable, str(find_tools().converter), str(model_dir), "--vocab-only", "--outfile", str(out_file)]
    subprocess.run(command, check=True, capture_output=True)
    return out_file


def test_the_converter_as_it_is_would_tokenize_differently(tmp_path):
    """Why the export stages the tokenizer: converted as it is, no templated prompt keeps its ids."""
    _, tokenizer = load_for_inference(DEMO_MODEL, device="cpu")
    assert not space_after_special(tokenizer)
    assert same_ids(convert_vocab(DEMO_MODEL, tmp_path / "plain.gguf"), tokenizer, QUESTIONS + [MULTI]) == 0


def eeve_like_model(folder: Path) -> Path:
    """A tokenizer built as EEVE's was: a SentencePiece BPE model with byte fallback (Llama's kind), turned into a
    tokenizer.json by transformers' converter (merges for every split of every piece, the legacy Llama
    normalizer), the tokenizer.model left out, <|im_end|> added after the learned pieces as the eos token, and
    tokenizer_class LlamaTokenizer; beside it the demo model's config with that vocabulary size."""
    import io

    import sentencepiece
    from tokenizers import Tokenizer, decoders, normalizers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import SentencePieceExtractor

    lines = [m["content"] for c in prompt_conversations()[:100] for m in c]
    for line in (REPO / "data/demo/train.jsonl").read_text(encoding="utf-8").splitlines():
        lines += [m["content"] for m in json.loads(line)["messages"]]
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type="bpe",
        vocab_size=3000,
        byte_fallback=True,
        character_coverage=0.9995,
        minloglevel=2,
    )
    folder.mkdir(parents=True)
    (folder / "spm.model").write_bytes(model.getvalue())
    extracted = SentencePieceExtractor(str(folder / "spm.model")).extract(BPE)
    (folder / "spm.model").unlink()
    raw = Tokenizer(
        BPE(vocab=extracted["vocab"], merges=extracted["merges"], unk_token="<unk>", fuse_unk=True, byte_fallback=True)
    )
    raw.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    raw.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    tokenizer.add_special_tokens({"eos_token": "<|im_end|>"})
    tokenizer.save_pretrained(folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.update(tokenizer_class="LlamaTokenizer", pad_token="</s>")
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "chat_template.jinja").write_text((DEMO_MODEL / "chat_template.jinja").read_text())
    model_config = json.loads((DEMO_MODEL / "config.json").read_text())
    model_config.update(vocab_size=len(tokenizer), eos_token_id=len(tokenizer) - 1)
    (folder / "config.json").write_text(json.dumps(model_config))
    return folder


def test_a_tokenizer_built_like_eeve_s_has_the_problem_and_the_fix(tmp_path):
    from transformers import AutoTokenizer

    from eeve_sft.inference.gguf import stage_for_converter

    folder = eeve_like_model(tmp_path / "eeve-like")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert type(tokenizer).__name__ == "LlamaTokenizer" and not (folder / "tokenizer.model").exists()
    assert not space_after_special(tokenizer)  # transformers 5 prepends "▁" at the start of the input only
    conversations = prompt_conversations()
    assert same_ids(convert_vocab(folder, tmp_path / "plain.gguf"), tokenizer, conversations) == 0
    staged = stage_for_converter(folder, tmp_path / "staged" / "eeve-like", tokenizer)
    fixed = same_ids(convert_vocab(staged, tmp_path / "fixed.gguf"), tokenizer, conversations)
    assert fixed == len(conversations)


def greedy_transformers(model, ids: list[int], steps: int) -> list[int]:
    out: list[int] = []
    with torch.no_grad():
        for _ in range(steps):
            logits = model(input_ids=torch.tensor([ids + out])).logits[0, -1]
            out.append(int(logits.argmax()))
    return out


def greedy_gguf(llm, ids: list[int], steps: int) -> list[int]:
    llm.reset()
    llm.eval(ids)
    out: list[int] = []
    for _ in range(steps):
        token = int(llm.scores[llm.n_tokens - 1].argmax())
        out.append(token)
        llm.eval([token])
    return out


def test_f16_greedy_tokens_equal_transformers(exported):
    model, tokenizer = load_for_inference(exported / "run" / "final", device="cpu")
    model.float()
    llm = load_gguf(exported / "gguf" / "gguf-f16.gguf", n_ctx=512, logits_all=True, n_threads=2)
    for messages in QUESTIONS + [MULTI[:2]]:
        ids = encode_prompt(tokenizer, messages)
        assert greedy_gguf(llm, ids, GREEDY_TOKENS) == greedy_transformers(model, ids, GREEDY_TOKENS), messages


class GoTemplate:
    """The part of Go's text/template an Ollama TEMPLATE uses here: text, {{ "literal" }}, {{ .Field }},
    if / else if / else / end with .Field or eq .Field "literal", range .Messages, and the {{- -}} trim markers."""

    ACTION = re.compile(r"\{\{(-\s)?\s*(.*?)\s*(\s-)?\}\}", re.S)

    def __init__(self, text: str):
        self.nodes: list = []
        pos, trim_next = 0, False
        for match in self.ACTION.finditer(text):
            chunk = text[pos : match.start()]
            chunk = chunk.lstrip() if trim_next else chunk
            self.nodes.append(("text", chunk.rstrip() if match.group(1) else chunk))
            self.nodes.append(("action", match.group(2)))
            pos, trim_next = match.end(), bool(match.group(3))
        tail = text[pos:]
        self.nodes.append(("text", tail.lstrip() if trim_next else tail))

    def render(self, data: dict) -> str:
        out, _ = self._block(0, data)
        return out

    def _value(self, expr: str, dot: dict):
        if expr.startswith('"'):
            return json.loads(expr)
        if expr.startswith("eq "):
            left, right = expr[3:].split(" ", 1)
            return self._value(left, dot) == self._value(right, dot)
        assert expr.startswith("."), expr
        return dot.get(expr[1:], "")

    def _block(self, i: int, dot: dict, emit: bool = True) -> tuple[str, int]:
        out = []
        while i < len(self.nodes):
            kind, value = self.nodes[i]
            if kind == "text":
                out.append(value if emit else "")
                i += 1
            elif value in ("end", "else") or value.startswith("else if "):
                return "".join(out), i
            elif value.startswith("if "):
                taken, cond = False, value[3:]
                while True:
                    branch = emit and not taken and bool(self._value(cond, dot))
                    text, i = self._block(i + 1, dot, branch)
                    out.append(text if branch else "")
                    taken = taken or branch
                    kind, value = self.nodes[i]
                    if value == "end":
                        break
                    cond = value[len("else if ") :] if value.startswith("else if ") else '"x"'
                i += 1
            elif value.startswith("range "):
                items = self._value(value[6:], dot) if emit else []
                start, end = i + 1, None
                for item in items:
                    text, end = self._block(start, item)
                    out.append(text)
                _, end = self._block(start, dot, False) if end is None else (None, end)
                i = end + 1
            else:
                out.append(str(self._value(value, dot)) if emit else "")
                i += 1
        return "".join(out), i


def modelfile_template(modelfile: str) -> str:
    return re.search(r'^TEMPLATE """(.*?)"""$', modelfile, re.S | re.M).group(1)


def ollama_render(template: str, messages: list[dict]) -> str:
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    ollama_messages = [{"Role": m["role"], "Content": m["content"]} for m in messages]  # Ollama's field names
    return GoTemplate(template).render({"System": system, "Messages": ollama_messages})


def test_chat_template_and_modelfile_render_the_project_text(exported):
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    _, tokenizer = load_for_inference(exported / "run" / "final", device="cpu")
    metadata = load_gguf(exported / "gguf" / "gguf-f16.gguf", vocab_only=True).metadata
    formatter = Jinja2ChatFormatter(metadata["tokenizer.chat_template"], eos_token="<|im_end|>", bos_token="<s>")
    modelfile = (exported / "gguf" / MODELFILE).read_text(encoding="utf-8")
    template = modelfile_template(modelfile)
    conversations = [QUESTIONS[0], QUESTIONS[2], SINGLE + [{"role": "user", "content": "또?"}], MULTI + MULTI[1:2]]
    for messages in conversations:
        expected = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert formatter(messages=messages).prompt == expected  # the engine llama-cpp-python uses
        assert "<s>" + ollama_render(template, messages) == expected  # Ollama adds <s> as the bos token
    assert re.search(r"^FROM \./gguf-f16\.gguf$", modelfile, re.M)
    assert '\nPARAMETER stop "<|im_end|>"\nPARAMETER stop "</s>"\n' in modelfile
    assert metadata["tokenizer.ggml.add_space_prefix"] == "false"
    assert [metadata["tokenizer.ggml.eos_token_id"], metadata["tokenizer.ggml.padding_token_id"]] == ["2048", "2"]


def test_export_folder_and_card(exported):
    folder = exported / "gguf"
    assert sorted(p.name for p in folder.iterdir()) == ["Modelfile", "README.md", "gguf-f16.gguf", "gguf-q8_0.gguf"]
    assert not [p.name for p in exported.iterdir() if p.name.startswith(".")]  # no work or building folder left
    sizes = {p.name: p.stat().st_size for p in folder.glob("*.gguf")}
    assert sizes["gguf-q8_0.gguf"] < sizes["gguf-f16.gguf"]
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert "| `gguf-q8_0.gguf` | q8_0 |" in card and "add_prefix_space: false" in card
    assert "## Recipe" in card and "library_name: gguf" in card


def test_push_names_the_repo_in_the_card(exported, tmp_path):
    import shutil

    from eeve_sft.inference.gguf import GgufExport
    from eeve_sft.inference.loading import resolve_model_source

    folder = tmp_path / "gguf"
    shutil.copytree(exported / "gguf", folder)
    export = GgufExport(
        folder,
        resolve_model_source(DEMO_MODEL),
        False,
        files={"f16": "gguf-f16.gguf"},
        sizes={"f16": (folder / "gguf-f16.gguf").stat().st_size},
    )

    class FakeHub:
        calls = []

        def create_repo(self, repo_id, **kwargs):
            self.calls.append(kwargs)
            return f"https://hub.example/{repo_id}"

        def upload_folder(self, **kwargs):
            self.calls.append(kwargs)

    assert push_gguf(export, "me/eeve-gguf", api=FakeHub()) == "https://hub.example/me/eeve-gguf"
    assert FakeHub.calls[0]["private"] and FakeHub.calls[1]["folder_path"] == str(folder)
    assert "# eeve-gguf" in (folder / "README.md").read_text(encoding="utf-8")


# -------------------------------------------------------------------------------------------------- bad input


def test_pin_matches_setup_cfg():
    assert f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}" in (REPO / "setup.cfg").read_text()


def test_bad_input_is_one_line_and_writes_nothing(capsys, tmp_path, monkeypatch):
    import importlib.util

    model = ["--model-path", str(DEMO_MODEL)]
    out = tmp_path / "out"
    line = cli_error(capsys, "export_gguf", [*model, "--output", str(out), "--quant", "f16,q3_x"])
    assert line == "error: unknown quantization type 'q3_x': choose from " + ", ".join(
        __import__("eeve_sft.inference.gguf", fromlist=["QUANT_TYPES"]).QUANT_TYPES
    )
    line = cli_error(capsys, "export_gguf", ["--model-path", str(tmp_path), "--output", str(out)])
    assert line == f"error: {tmp_path} is not a model or adapter: it has no adapter_config.json or config.json"
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    line = cli_error(capsys, "export_gguf", [*model, "--output", str(taken)])
    assert line == f"error: output directory {taken} is not empty; pass --overwrite to replace it"
    line = cli_error(capsys, "export_gguf", [*model, "--output", str(out), "--llama-cpp", str(tmp_path)])
    assert line == f"error: --llama-cpp {tmp_path}: no {CONVERTER} there (give a llama.cpp source folder)"

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "llama_cpp" else real_find_spec(name))
    monkeypatch.delenv("LLAMA_CPP_DIR", raising=False)
    line = cli_error(capsys, "export_gguf", [*model, "--output", str(out)])
    assert line == 'error: llama.cpp\'s tools are not installed: pip install -e ".[gguf]"'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"] and (taken / "keep.txt").read_text() == "mine"


def test_cli_exports_a_merged_model(tmp_path):
    out = tmp_path / "demo"
    result = run_script(
        sys.executable,
        "scripts/export_gguf.py",
        "--model-path",
        str(DEMO_MODEL),
        "--output",
        str(out),
        "--quant",
        "q4_k_m",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "README.md", "demo-q4_k_m.gguf"]
    assert f"q4_k_m: {out / 'demo-q4_k_m.gguf'}" in result.stdout
    assert "FROM ./demo-q4_k_m.gguf" in (out / MODELFILE).read_text()


def test_a_quantizer_binary_whose_output_is_not_utf8_still_reports_success_and_failure(tmp_path):
    from eeve_sft.errors import UserError
    from eeve_sft.inference.gguf import LlamaCppTools, quantize

    # llama-quantize's progress output can hold bytes that are not UTF-8: what decides is its exit status and file.
    tool = tmp_path / "llama-quantize"
    tool.write_text(
        "#!/bin/sh\nprintf 'quantizing \\377\\376 layer\\n' >&2\n"
        '[ "$3" = Q8_0 ] && printf gguf > "$2" && exit 0\nprintf "unknown type \\377\\n" >&2\nexit 1\n'
    )
    tool.chmod(0o755)
    tools = LlamaCppTools(tmp_path, tool)
    src = tmp_path / "model-f16.gguf"
    src.write_bytes(b"gguf")
    assert quantize(tools, src, tmp_path / "q8.gguf", "q8_0", 1).read_bytes() == b"gguf"
    with pytest.raises(UserError, match=r"quantizer failed on model-f16.gguf -> q4_k_m: unknown type \ufffd"):
        quantize(tools, src, tmp_path / "q4.gguf", "q4_k_m", 1)
