"""Load a base model, a LoRA adapter or a merged model for generation, with its tokenizer and template.

What a path holds decides how it loads: a directory with ``adapter_config.json`` is a PEFT adapter whose base
model is named in that file; a directory with ``config.json`` is a full (merged) model; a name that
:func:`eeve_sft.hub.looks_like_path` does not take for a path is a Hub id. The prompt always comes from the tokenizer's chat template (see
:mod:`eeve_sft.template`), and generation stops on every id of :func:`~eeve_sft.template.stop_token_ids`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ..errors import UserError, one_line
from ..hub import check_model, hub_unavailable, looked_for, looks_like_path
from ..template import apply_eeve_template, pad_token_id, special_token_ids
from ..training.run_dir import RunDir, resolve_base_model

DEFAULT_BASE_MODEL = "yanolja/EEVE-Korean-Instruct-10.8B-v1.0"


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from. `kind` is ``adapter`` (LoRA on `base`) or ``model`` (full weights at `path`)."""

    given: str
    kind: str
    path: str
    base: str | None = None

    @property
    def weights(self) -> str:
        """What `from_pretrained` loads the full weights from."""
        return self.base if self.kind == "adapter" else self.path


def resolve_model_source(model_path: str | Path | None) -> ModelSource:
    """Decide what `model_path` is without loading weights; raise UserError when it is none of the three."""
    given = str(model_path) if model_path is not None else DEFAULT_BASE_MODEL
    path = Path(given).expanduser()
    if path.exists():
        if (path / "adapter_config.json").is_file():
            try:
                from peft import PeftConfig

                base = PeftConfig.from_pretrained(str(path)).base_model_name_or_path
            except (ValueError, OSError, TypeError) as err:
                raise UserError(f"{path}: unreadable adapter_config.json ({err})") from None
            if not base:
                raise UserError(f"adapter {path}: adapter_config.json names no base_model_name_or_path")
            return ModelSource(given, "adapter", str(path), resolve_base_model(path, base))
        if (path / "config.json").is_file():
            return ModelSource(given, "model", str(path))
        raise UserError(
            f"{path} is not a model or adapter: it has no adapter_config.json or config.json{_in_run(path)}"
        )
    if looks_like_path(given):  # decided here without asking the Hub; loading asks it (check_model)
        raise UserError(f"model path not found: {given}{looked_for(path)}")
    return ModelSource(given, "model", given)


def _cache_only(name: str) -> bool:
    """Load a Hub id from the local cache only when the Hub cannot be used (checked before, in a few seconds),
    instead of the libraries' retries."""
    return not Path(name).expanduser().exists() and hub_unavailable() is not None


def _in_run(path: Path) -> str:
    """Where the model is when `path` is a training run's folder: its final adapter, else its latest checkpoint."""
    run = RunDir(path)
    if not run.recipe_file.is_file():
        return ""
    found = run.final_dir if run.final_dir.is_dir() else run.latest_checkpoint()
    if found is None:
        return "; it is a training run's folder with no final/ or checkpoint-N/ yet"
    return f"; it is a training run's folder: pass {found}"


def align_generation_config(model, tokenizer) -> None:
    """Make the model's saved generation defaults stop on every stop id and pad with ``</s>``."""
    model.generation_config.update(**special_token_ids(tokenizer))


def load_saved_tokenizer(source: ModelSource):
    """The tokenizer saved with the adapter or model (it carries the template), else the base model's.

    The Hub release of the base model predates the project's template, and a directory saved without a
    template has nothing better to go by: both get the EEVE template.
    """
    if source.kind == "adapter":  # the first thing loaded: a Hub id the Hub cannot give now fails here, at once
        check_model(source.base, "base model")
    else:
        check_model(source.path)
    tokenizer_dir = source.path
    if source.kind == "adapter" and not (Path(source.path) / "tokenizer_config.json").is_file():
        tokenizer_dir = source.base
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=_cache_only(tokenizer_dir))
    except (OSError, ValueError) as err:
        raise UserError(
            f"cannot load the tokenizer of {source.given} from '{tokenizer_dir}': {one_line(err)}"
        ) from None
    if tokenizer.chat_template is None or not Path(tokenizer_dir).is_dir():
        apply_eeve_template(tokenizer)
    return tokenizer


def load_tokenizer(source: ModelSource):
    """The saved tokenizer, set up for batched generation: left padding with ``</s>``."""
    tokenizer = load_saved_tokenizer(source)
    tokenizer.pad_token = tokenizer.convert_ids_to_tokens(pad_token_id(tokenizer))
    tokenizer.padding_side = "left"
    return tokenizer


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def dtype_for(device: str) -> torch.dtype:
    return torch.bfloat16 if str(device).startswith("cuda") else torch.float32


def quantization_config():
    """QLoRA's NF4 settings: 4-bit NormalFloat weights, double quantisation, bf16 compute."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def load_base_weights(source: ModelSource, dtype: torch.dtype, quantization=None, device_map=None):
    """`from_pretrained` on the full weights, with a load failure reported as one line naming the model."""
    kwargs = {"dtype": dtype}
    if _cache_only(source.weights):
        # transformers 5 does not hand local_files_only on to its adapter_config.json lookup; say it there too.
        kwargs.update(local_files_only=True, adapter_kwargs={"local_files_only": True})
    if quantization is not None:
        kwargs["quantization_config"] = quantization
    if device_map is not None:
        kwargs["device_map"] = device_map
    try:
        return AutoModelForCausalLM.from_pretrained(source.weights, **kwargs)
    except (OSError, ValueError) as err:
        what = f"base model '{source.base}' of adapter {source.path}" if source.kind == "adapter" else source.path
        raise UserError(f"cannot load {what}: {one_line(err)}") from None


def attach_adapter(model, source: ModelSource):
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, source.path)
    except (OSError, ValueError, RuntimeError) as err:
        raise UserError(f"cannot load adapter {source.path} onto '{source.base}': {one_line(err)}") from None


def load_for_inference(
    model_path: str | Path | None = None,
    load_in_4bit: bool = False,
    device: str | None = None,
    merge_adapter: bool = True,
):
    """Load `model_path` (adapter, merged model or Hub id; None = the EEVE base) ready to generate.

    Returns ``(model, tokenizer)``: the model in eval mode on `device` (cuda when there is one, else cpu;
    bf16 on cuda, fp32 on cpu), the tokenizer padding left with ``</s>``, and the generation config stopping
    on every stop id. An adapter on full-precision weights is merged into them (`merge_adapter`, in place: no
    extra memory), so each projection is one product, as in the base model, instead of the base product plus the
    adapter's two; on 4-bit weights it stays separate (merging would re-quantize them).
    """
    device = device or default_device()
    if load_in_4bit and not (str(device).startswith("cuda") and torch.cuda.is_available()):
        raise UserError("--load-in-4bit needs a CUDA GPU (bitsandbytes NF4); none is available here")
    source = resolve_model_source(model_path)
    tokenizer = load_tokenizer(source)
    if load_in_4bit:
        index = torch.device(device).index or 0
        model = load_base_weights(source, torch.bfloat16, quantization_config(), device_map={"": index})
    else:
        model = load_base_weights(source, dtype_for(device))
    if source.kind == "adapter":
        model = attach_adapter(model, source)
        if merge_adapter and not load_in_4bit:
            model = model.merge_and_unload()
    if not load_in_4bit:
        model.to(device)
    model.eval()
    align_generation_config(model, tokenizer)
    return model, tokenizer
