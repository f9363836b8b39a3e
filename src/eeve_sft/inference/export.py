"""Export a trained adapter as a standalone model: LoRA merged into the base weights, saved as safetensors with
the tokenizer, the chat template, a generation config that stops on every stop id, and a model card.

The merge goes into full-precision-format (bf16 by default) base weights, never into 4-bit ones: a QLoRA
adapter was trained against dequantised NF4 weights, and the bf16 original is what vLLM and TGI serve.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from transformers import GenerationConfig

from ..errors import UserError, one_line
from ..eval_table import results_table
from ..output_dir import atomic_output_dir, check_output_dir
from ..template import pad_token_id, special_token_ids
from ..training.run_dir import RunDir
from .loading import DEFAULT_BASE_MODEL, attach_adapter, load_base_weights, load_saved_tokenizer, resolve_model_source
from .sampling import SamplingConfig

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
CARD_FILE = "README.md"
DATA_CARD_NAMES = ("README.md", "data_card.md", "DATA_CARD.md", "card.md")


def merged_generation_config(tokenizer, sampling: SamplingConfig | None = None) -> GenerationConfig:
    """Stop ids ``[eos, </s>]``, ``</s>`` padding, and the project's chat sampling defaults, which vLLM, TGI and
    transformers all read from generation_config.json."""
    sampling = sampling or SamplingConfig()
    return GenerationConfig(
        **special_token_ids(tokenizer),
        do_sample=sampling.do_sample,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k,
        repetition_penalty=sampling.repetition_penalty,
    )


def merge_adapter(
    model_path: str | Path,
    output_dir: str | Path,
    dtype: str = "bfloat16",
    overwrite: bool = False,
    device: str = "cpu",
) -> Path:
    """Merge the LoRA adapter at `model_path` into its base model and save the result to `output_dir`.

    Everything is written to a temporary folder beside `output_dir` and renamed into place at the end
    (:func:`eeve_sft.output_dir.atomic_output_dir`), so a failed or interrupted merge never leaves something that
    looks like a finished model, and an existing one stays until the new one is complete.
    """
    if dtype not in DTYPES:
        raise UserError(f"--dtype must be one of {', '.join(DTYPES)}, got '{dtype}'")
    source = resolve_model_source(model_path)
    if source.kind != "adapter":
        raise UserError(f"{model_path} is not a LoRA adapter (no adapter_config.json): nothing to merge")
    output = Path(output_dir)
    if output.resolve() == Path(source.path).resolve():
        raise UserError("--output must not be the adapter directory itself")
    check_output_dir(output, overwrite)

    tokenizer = load_saved_tokenizer(source)  # as saved: no inference padding settings in the export
    model = attach_adapter(load_base_weights(source, DTYPES[dtype]), source)
    model.to(device)
    merged = model.merge_and_unload()
    merged.generation_config = merged_generation_config(tokenizer)
    merged.config.pad_token_id = pad_token_id(tokenizer)

    with atomic_output_dir(output, overwrite) as building:
        merged.save_pretrained(building, safe_serialization=True)
        tokenizer.save_pretrained(building)
        write_model_card(building, source.path, source.base)
    return output


# -------------------------------------------------------------------------------------------------- model card


def find_run_dir(adapter_path: str | Path) -> RunDir | None:
    """The training run an adapter came from (``RUN/final`` or ``RUN/checkpoint-N``), if it is recognisable."""
    return RunDir.containing(adapter_path)


def _data_section(run: RunDir) -> list[str]:
    config = run.configuration()
    name = config.get("dataset_name")
    if not name:
        return ["The training run's recipe names no dataset."]
    lines = [
        f"Dataset: `{name}` (train split `{config.get('dataset_train_split')}`, "
        f"eval split `{config.get('dataset_test_split')}`)."
    ]
    data_dir = run.find_near(name)
    for card_name in DATA_CARD_NAMES:
        card = data_dir / card_name if data_dir else None
        if data_dir is not None and data_dir.is_dir() and card.is_file():
            text = card.read_text(encoding="utf-8").strip()
            # Demote the data card's headings so they nest under this card's section.
            text = "\n".join("##" + line if line.startswith("#") else line for line in text.splitlines())
            lines += ["", f"From the dataset's card (`{card_name}`):", "", text]
            break
    return lines


def _sft_run_of(run: RunDir | None, recipe: dict) -> RunDir | None:
    """The SFT run a DPO run started from (its sft_adapter's run), when it can be found."""
    adapter = run.find_near(recipe["sft_adapter"]) if run and recipe.get("sft_adapter") else None
    return RunDir.containing(adapter) if adapter else None


def _preference_section(run: RunDir, recipe: dict, sft_run: RunDir | None) -> list[str]:
    config = run.configuration()
    preference = run.summary().get("preference") or {}
    lines = [
        f"The DPO stage continued the SFT adapter `{recipe['sft_adapter']}` (the reference model) with beta "
        f"{config.get('beta')}, learning rate {config.get('learning_rate')}, {config.get('num_train_epochs')} "
        "epoch(s); the pairs above are its data."
    ]
    if preference.get("end") is not None:
        lines += [
            "",
            f"On {preference.get('eval_pairs')} held-out pairs, the share where the model finds the 존댓말 answer "
            f"likelier than the 반말 one: {preference.get('sft_start')} after SFT, {preference['end']} after DPO.",
        ]
    if sft_run is not None:
        lines += ["", "The SFT stage's data:", ""] + _data_section(sft_run)
    return lines


def training_sections(run: RunDir | None) -> list[str]:
    """The card's training data, preference tuning (a DPO run), recipe and evaluation sections, from the run an
    adapter came from."""
    recipe = run.recipe() if run else {}
    out = ["## Training data", ""]
    out += _data_section(run) if run else ["The adapter's training run was not found."]
    if "sft_adapter" in recipe:
        out += ["", "## Preference tuning", ""] + _preference_section(run, recipe, _sft_run_of(run, recipe))
    out += ["", "## Recipe", ""]
    if recipe:
        out += ["```yaml", yaml.safe_dump(recipe, allow_unicode=True, sort_keys=True).strip(), "```"]
    else:
        out.append("The training run's recipe.yaml was not found next to the adapter.")
    out += ["", "## Evaluation", ""]
    document = run.evaluation() if run else None  # the file compare.py cites too
    if document:
        out += [
            f"Answers to {document['num_prompts']} 반말 prompts, labelled by the project's speech-level classifier; "
            "the 존댓말 rate is the share labelled polite.",
            "",
            results_table(document["models"]),
        ]
    else:
        out.append("No evaluation was found in the training run (scripts/evaluate.py writes them into its eval/).")
    return out


def training_description(recipe: dict) -> tuple[str, list[str]]:
    """How a run's model was trained, for a card's first sentence, and the tags that say so: a DPO run's recipe
    names the SFT adapter it continued."""
    if "sft_adapter" in recipe:
        return (
            "fine-tuned with LoRA in two stages, SFT (TRL SFTTrainer) then preference tuning (TRL DPOTrainer) that "
            "prefers each 존댓말 answer over the same answer in 반말,",
            ["dpo"],
        )
    return "fine-tuned with LoRA (TRL SFTTrainer)", []


def card_head(front: dict, title: str) -> list[str]:
    """A model card's front matter and title lines."""
    return ["---", yaml.safe_dump(front, allow_unicode=True, sort_keys=False).strip(), "---", "", f"# {title}", ""]


def render_model_card(adapter_path: str | Path, base_model: str | None, repo_id: str | None = None) -> str:
    run = find_run_dir(adapter_path)
    run_dir = run.path if run else None
    recipe = run.recipe() if run else {}
    base = base_model or recipe.get("model_name_or_path") or DEFAULT_BASE_MODEL
    title = repo_id.split("/")[-1] if repo_id else (run_dir.name if run_dir else Path(adapter_path).name)
    front = {
        "base_model": base,
        "library_name": "transformers",
        "language": ["ko"],
        "pipeline_tag": "text-generation",
        "tags": ["eeve", "lora", "sft", "trl", "korean", "honorifics"],
    }
    how, tags = training_description(recipe)
    front["tags"] += tags
    out = [
        *card_head(front, title),
        f"`{base}` {how} to answer in natural 존댓말, also when asked in 반말. "
        "The adapter is merged into the base weights: this is a standalone model.",
        "",
        "## Base model",
        "",
        f"`{base}`",
        "",
    ]
    out += training_sections(run)
    out += [
        "",
        "## Use",
        "",
        "The chat template (EEVE's `Human:` / `Assistant:` format) is in the tokenizer. Stop on both "
        "`<|im_end|>` and `</s>` (generation_config.json lists them).",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        f'tokenizer = AutoTokenizer.from_pretrained("{repo_id or "PATH"}")',
        f'model = AutoModelForCausalLM.from_pretrained("{repo_id or "PATH"}", dtype="bfloat16", device_map="auto")',
        'messages = [{"role": "user", "content": "오늘 뭐 먹을까?"}]',
        'inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",',
        "                                       return_dict=True).to(model.device)",
        "output = model.generate(**inputs, max_new_tokens=512)",
        'print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip())',
        "```",
        "",
        f"vLLM: `vllm serve {repo_id or 'PATH'}` serves it with the template and stop ids as saved.",
        "",
    ]
    return "\n".join(out)


def write_model_card(
    output_dir: str | Path, adapter_path: str | Path, base_model: str | None, repo_id: str | None = None
) -> Path:
    path = Path(output_dir) / CARD_FILE
    path.write_text(render_model_card(adapter_path, base_model, repo_id), encoding="utf-8")
    return path


def push_to_hub(
    output_dir: str | Path,
    repo_id: str,
    adapter_path: str | Path,
    base_model: str | None,
    private: bool = True,
    api=None,
) -> str:
    """Upload the merged model to `repo_id`, with the card rewritten to name the repo; return the repo URL."""
    write_model_card(output_dir, adapter_path, base_model, repo_id)
    return upload_folder(output_dir, repo_id, private, "Upload merged EEVE 존댓말 model", api)


def upload_folder(folder: str | Path, repo_id: str, private: bool, message: str, api=None) -> str:
    """Create the model repo `repo_id` if needed and upload `folder` into it; return the repo URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = api or HfApi()
    try:
        url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model", commit_message=message)
    except (HfHubHTTPError, OSError, ValueError) as err:
        raise UserError(f"push to {repo_id} failed: {one_line(err)}") from None
    return str(url)


# ------------------------------------------------------------------------------------------------ vLLM readiness

# What `vllm serve` needs of a folder as it is, from vLLM's documentation: a transformers config naming an
# architecture it implements, the tokenizer with its chat template (otherwise every chat request needs
# --chat-template), and generation_config.json, whose eos ids and sampling defaults vLLM applies to requests. A LoRA
# adapter (--enable-lora --lora-modules NAME=PATH) must be a PEFT LoRA of rank at most --max-lora-rank without
# modules_to_save, which vLLM's LoRA loader refuses.
VLLM_ARCHITECTURES = ("LlamaForCausalLM",)
VLLM_MAX_LORA_RANK = 64


def vllm_problems(path: str | Path, stop_ids: list[int] | None = None) -> list[str]:
    """Why `vllm serve` would not serve the merged model or adapter at `path` as it is (empty when it would).

    `stop_ids` (default: the folder's tokenizer's, ``[<|im_end|>, </s>]``) must be generation_config.json's eos ids.
    """
    import json

    folder = Path(path)
    problems: list[str] = []

    def read(name: str) -> dict | None:
        file = folder / name
        return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else None

    adapter = read("adapter_config.json")
    if adapter is not None:
        if adapter.get("peft_type") != "LORA":
            problems.append(f"adapter_config.json: peft_type is {adapter.get('peft_type')}, vLLM serves LORA only")
        if int(adapter.get("r") or 0) > VLLM_MAX_LORA_RANK:
            problems.append(f"adapter rank {adapter.get('r')} is above vLLM's largest --max-lora-rank (64)")
        if adapter.get("modules_to_save"):
            problems.append(f"adapter saves whole modules ({', '.join(adapter['modules_to_save'])}): vLLM refuses it")
        if not (folder / "adapter_model.safetensors").is_file():
            problems.append("no adapter_model.safetensors")
        return problems

    config = read("config.json")
    if config is None:
        return [f"{folder} has no config.json or adapter_config.json"]
    architectures = config.get("architectures") or []
    if not set(architectures) & set(VLLM_ARCHITECTURES):
        problems.append(f"config.json architectures {architectures} are not {', '.join(VLLM_ARCHITECTURES)}")
    if not list(folder.glob("*.safetensors")):
        problems.append("no safetensors weights")
    if not (folder / "tokenizer.json").is_file():
        problems.append("no tokenizer.json")
    tokenizer_config = read("tokenizer_config.json") or {}
    if not (folder / "chat_template.jinja").is_file() and not tokenizer_config.get("chat_template"):
        problems.append("no chat template (chat_template.jinja or tokenizer_config.json's chat_template)")
    generation = read("generation_config.json")
    if generation is None:
        problems.append("no generation_config.json: vLLM would stop on config.json's single eos id only")
    else:
        if stop_ids is None:
            from transformers import AutoTokenizer

            from ..template import stop_token_ids

            stop_ids = stop_token_ids(AutoTokenizer.from_pretrained(folder))
        eos = generation.get("eos_token_id")
        if (eos if isinstance(eos, list) else [eos]) != stop_ids:
            problems.append(f"generation_config.json eos_token_id is {eos}, not {stop_ids}")
    return problems
