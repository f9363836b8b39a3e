"""GGUF export for llama.cpp and Ollama: llama.cpp's own converter and quantizer, run on a model folder whose
tokenizer is prepared so that llama.cpp splits every prompt into the same ids as transformers.

Where the tools come from (all pinned to one llama.cpp release, the one ``llama-cpp-python`` vendors):

* the quantizer is ``llama_model_quantize`` of the ``llama_cpp`` package (the ``gguf`` extra), or a
  ``llama-quantize`` binary built from a llama.cpp source folder (``--llama-cpp DIR/build/bin``);
* the converter (``convert_hf_to_gguf.py`` with its ``conversion`` and ``gguf-py`` packages) is not in that
  package's wheel, only in its source release: it is unpacked from there once into a cache folder, or read from a
  llama.cpp source folder given with ``--llama-cpp`` / ``LLAMA_CPP_DIR``.

The tokenizer: EEVE's (and the demo model's) is a ``tokenizer.json``-only Llama byte-fallback BPE. llama.cpp
tokenizes it as SentencePiece, which by default puts a ``▁`` (space) in front of the text after every special
token; transformers' Llama tokenizer prepends it only at the very start of the input (``prepend_scheme=first``).
Every prompt begins with ``<s>``, so all of them differed. The converter takes ``add_prefix_space`` from
``tokenizer_config.json`` (``tokenizer.ggml.add_space_prefix``); the export sets it to what transformers does after
a special token, in a staging copy of the model folder, and leaves the model's own files untouched.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..output_dir import atomic_output_dir, check_output_dir
from ..template import PAD_TOKEN
from .loading import ModelSource, load_saved_tokenizer, resolve_model_source

# The llama.cpp release the project converts and quantizes with: the one vendored by this llama-cpp-python
# source release (setup.cfg's gguf extra pins the same version; a test keeps the two equal).
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
INSTALL_HINT = 'pip install -e ".[gguf]"'
CONVERTER = "convert_hf_to_gguf.py"
# What the converter needs of the source release, under vendor/llama.cpp/.
CONVERTER_PARTS = (CONVERTER, "conversion", "gguf-py", "LICENSE")

# Written by the converter itself.
CONVERTER_TYPES = ("f32", "f16", "bf16")
# Written by llama.cpp's quantizer from the f16 file: name -> llama_ftype (llama.h's LLAMA_FTYPE_MOSTLY_*).
QUANTIZED_TYPES = {
    "q8_0": 7,
    "q6_k": 18,
    "q5_k_m": 17,
    "q5_k_s": 16,
    "q5_0": 8,
    "q4_k_m": 15,
    "q4_k_s": 14,
    "q4_0": 2,
    "q3_k_m": 12,
    "q2_k": 10,
}
QUANT_TYPES = (*CONVERTER_TYPES, *QUANTIZED_TYPES)
DEFAULT_QUANTS = ("f16", "q8_0", "q4_k_m")
MODELFILE = "Modelfile"
CARD_FILE = "README.md"

_GENERATION_TAG = re.compile(r"\{%-?\s*(end)?generation\s*-?%\}")


def parse_quants(text: str | list[str] | tuple[str, ...]) -> list[str]:
    """``f16,q8_0`` -> ``["f16", "q8_0"]`` in the order given, duplicates dropped; an unknown name is a UserError."""
    names = text.split(",") if isinstance(text, str) else list(text)
    quants = list(dict.fromkeys(n.strip().lower() for n in names if n.strip()))
    if not quants:
        raise UserError(f"--quant names no type: choose from {', '.join(QUANT_TYPES)}")
    unknown = [q for q in quants if q not in QUANT_TYPES]
    if unknown:
        raise UserError(f"unknown quantization type '{unknown[0]}': choose from {', '.join(QUANT_TYPES)}")
    return quants


# ------------------------------------------------------------------------------------------------ the tools


def default_tools_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "eeve-sft" / f"llama.cpp-{LLAMA_CPP_PYTHON_VERSION}"


@dataclass(frozen=True)
class LlamaCppTools:
    """llama.cpp's converter (a source folder holding ``convert_hf_to_gguf.py``) and its quantizer: a
    ``llama-quantize`` binary when one is given, else the ``llama_cpp`` package's ``llama_model_quantize``."""

    source: Path
    quantize_bin: Path | None = None

    @property
    def converter(self) -> Path:
        return self.source / CONVERTER


def fetch_converter(dest: Path, extra_parts: tuple[str, ...] = ()) -> Path:
    """Unpack llama.cpp's converter (and `extra_parts`, paths under vendor/llama.cpp/) from the pinned
    llama-cpp-python source release, which pip downloads (or finds in its cache), into `dest`."""
    with tempfile.TemporaryDirectory(prefix="llama-cpp-sdist-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
        command += ["--disable-pip-version-check", "-q", "-d", tmp, f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"]
        result = subprocess.run(command, capture_output=True, text=True)
        archives = list(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if result.returncode != 0 or not archives:
            why = (result.stderr.strip().splitlines() or ["no file"])[-1].strip()
            raise UserError(
                f"llama.cpp's converter is not installed and pip could not download llama-cpp-python=="
                f"{LLAMA_CPP_PYTHON_VERSION}'s source ({why}); give a llama.cpp source folder with --llama-cpp DIR"
            )
        prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}/vendor/llama.cpp/"
        wanted = tuple(prefix + part for part in (*CONVERTER_PARTS, *extra_parts))
        dest.parent.mkdir(parents=True, exist_ok=True)
        unpacking = Path(tempfile.mkdtemp(prefix=f".{dest.name}.unpacking-", dir=dest.parent))
        try:
            with tarfile.open(archives[0]) as archive:
                members = []
                for member in archive.getmembers():
                    if member.name in wanted or member.name.startswith(tuple(w + "/" for w in wanted)):
                        member.name = member.name[len(prefix) :]
                        members.append(member)
                archive.extractall(unpacking, members=members, filter="data")
            if not (unpacking / CONVERTER).is_file():
                raise UserError(f"llama-cpp-python {LLAMA_CPP_PYTHON_VERSION}'s source holds no {CONVERTER}")
            with contextlib.suppress(OSError):  # another process unpacked the same release first: keep that
                unpacking.rename(dest)
        finally:
            shutil.rmtree(unpacking, ignore_errors=True)
    return dest


def find_tools(llama_cpp_dir: str | Path | None = None, need_quantizer: bool = True) -> LlamaCppTools:
    """The converter and, if `need_quantizer`, the quantizer; a UserError saying how to install what is missing.

    `llama_cpp_dir` (or ``LLAMA_CPP_DIR``) is a llama.cpp source folder; without one the converter is unpacked
    once from the pinned source release into :func:`default_tools_dir`.
    """
    given = llama_cpp_dir or os.environ.get("LLAMA_CPP_DIR")
    if importlib.util.find_spec("sentencepiece") is None:  # the converter imports it for every Llama model
        raise UserError(f"llama.cpp's converter needs sentencepiece, which is missing: {INSTALL_HINT}")
    if given:
        source = Path(given).expanduser()
        if not (source / CONVERTER).is_file():
            raise UserError(f"--llama-cpp {source}: no {CONVERTER} there (give a llama.cpp source folder)")
    else:
        if importlib.util.find_spec("llama_cpp") is None:
            raise UserError(f"llama.cpp's tools are not installed: {INSTALL_HINT}")
        source = default_tools_dir()
        if not (source / CONVERTER).is_file():
            print(f"unpacking llama.cpp's converter (llama-cpp-python {LLAMA_CPP_PYTHON_VERSION}) into {source}")
            fetch_converter(source)
    quantize_bin = next(
        (p for p in (source / "build" / "bin" / "llama-quantize", source / "llama-quantize") if p.is_file()), None
    )
    if need_quantizer and quantize_bin is None and importlib.util.find_spec("llama_cpp") is None:
        raise UserError(f"llama.cpp's quantizer is not installed: {INSTALL_HINT}")
    return LlamaCppTools(source, quantize_bin)


# --------------------------------------------------------------------------------------------- tokenizer


def space_after_special(tokenizer) -> bool:
    """Whether transformers puts a ``▁`` in front of text that follows a special token (what llama.cpp's
    ``add_space_prefix`` does after every special token, the first ``<s>`` included)."""
    bos = tokenizer.bos_token or tokenizer.convert_ids_to_tokens(tokenizer.bos_token_id)
    ids = tokenizer(bos + "a", add_special_tokens=False)["input_ids"]
    pieces = tokenizer.convert_ids_to_tokens(ids)
    return len(pieces) > 1 and pieces[1].startswith("▁")


def serving_chat_template(template: str) -> str:
    """The chat template without transformers' ``{% generation %}`` markers (they only mark the tokens trained
    on; other Jinja engines reject or ignore them). It renders the same text."""
    return _GENERATION_TAG.sub("", template)


def default_system_line(tokenizer) -> str:
    """The system line the model's template writes when a conversation has none (the template's own default)."""
    marker = "\x00"
    text = tokenizer.apply_chat_template([{"role": "user", "content": marker}], tokenize=False)
    bos = tokenizer.bos_token or ""
    head = text.split(marker)[0]
    if not head.startswith(bos) or not head.endswith("\nHuman: "):
        raise UserError("the model's chat template is not EEVE's Human/Assistant format: cannot write a Modelfile")
    return head[len(bos) : -len("\nHuman: ")]


def sentencepiece_model(tokenizer_json: dict, tokenizer, add_space_prefix: bool) -> bytes | None:
    """A Llama byte-fallback BPE ``tokenizer.json`` as a SentencePiece model (``tokenizer.model``) whose piece
    scores follow the merge order, or None for another kind of tokenizer.

    llama.cpp's SentencePiece tokenizer repeatedly joins the neighbouring pair whose joined piece scores highest;
    transformers' BPE applies the earliest-listed merge. With each piece scored minus the rank of the merge that
    makes it, both take the same steps. The converter reads scores only from a tokenizer.model: given the
    tokenizer.json alone, it scores every piece alike, and llama.cpp then joins pairs left to right.
    """
    from sentencepiece import sentencepiece_model_pb2 as sp

    model = tokenizer_json.get("model") or {}
    if model.get("type") != "BPE" or not model.get("byte_fallback"):
        return None
    merges = model.get("merges") or []
    rank: dict[str, int] = {}
    for i, merge in enumerate(merges):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        rank.setdefault(left + right, i)
    vocab = tokenizer.get_vocab()
    by_id = {i: piece for piece, i in vocab.items()}
    if sorted(by_id) != list(range(len(by_id))):
        return None  # ids with gaps: not a layout SentencePiece can hold
    added = {t["id"]: t for t in tokenizer_json.get("added_tokens") or []}
    proto = sp.ModelProto()
    piece_type = sp.ModelProto.SentencePiece.Type
    for i in range(len(by_id)):
        piece = proto.pieces.add(piece=by_id[i])
        if i == tokenizer.unk_token_id:
            piece.type, piece.score = piece_type.UNKNOWN, 0.0
        elif i in added:
            piece.type = piece_type.CONTROL if added[i].get("special") else piece_type.USER_DEFINED
            piece.score = 0.0
        elif re.fullmatch(r"<0x[0-9A-F]{2}>", by_id[i]):
            piece.type, piece.score = piece_type.BYTE, 0.0
        else:
            # Pieces no merge makes (single characters) rank after every merge.
            piece.type, piece.score = piece_type.NORMAL, -float(rank.get(by_id[i], len(merges) + i))
    proto.trainer_spec.model_type = sp.TrainerSpec.BPE
    proto.trainer_spec.vocab_size = len(by_id)
    # SentencePiece refuses byte fallback without all 256 byte pieces; without them no text falls back to bytes.
    proto.trainer_spec.byte_fallback = all(f"<0x{b:02X}>" in vocab for b in range(256))
    proto.trainer_spec.unk_id = tokenizer.unk_token_id
    proto.trainer_spec.bos_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else -1
    proto.trainer_spec.eos_id = tokenizer.convert_tokens_to_ids(PAD_TOKEN)  # SentencePiece's eos is </s>
    proto.trainer_spec.pad_id = -1
    proto.normalizer_spec.name = "identity"
    proto.normalizer_spec.add_dummy_prefix = add_space_prefix
    proto.normalizer_spec.remove_extra_whitespaces = False
    proto.normalizer_spec.escape_whitespaces = True
    return proto.SerializeToString()


def stage_for_converter(model_dir: Path, staging: Path, tokenizer) -> Path:
    """A folder the converter reads as `model_dir`: links to its files, with tokenizer_config.json carrying
    ``add_prefix_space`` as transformers tokenizes, a tokenizer.model scored in merge order where the model has
    only a tokenizer.json, and chat_template.jinja without generation markers."""
    staging.mkdir(parents=True)
    rewritten = ("tokenizer_config.json", "chat_template.jinja")
    for item in Path(model_dir).iterdir():
        if item.name not in rewritten:
            (staging / item.name).symlink_to(item.resolve())
    add_space_prefix = space_after_special(tokenizer)
    tokenizer_json = Path(model_dir) / "tokenizer.json"
    if tokenizer_json.is_file() and not (Path(model_dir) / "tokenizer.model").is_file():
        spm = sentencepiece_model(json.loads(tokenizer_json.read_text(encoding="utf-8")), tokenizer, add_space_prefix)
        if spm is not None:
            (staging / "tokenizer.model").write_bytes(spm)
    config_path = Path(model_dir) / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    config["add_prefix_space"] = add_space_prefix
    (staging / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")
    if tokenizer.chat_template:
        (staging / "chat_template.jinja").write_text(serving_chat_template(tokenizer.chat_template), encoding="utf-8")
    return staging


# ------------------------------------------------------------------------------------ convert and quantize


def convert(tools: LlamaCppTools, model_dir: Path, out_file: Path, outtype: str) -> Path:
    """Run llama.cpp's converter on `model_dir` (a staged folder) into `out_file` as `outtype`."""
    command = [sys.executable, str(tools.converter), str(model_dir), "--outfile", str(out_file), "--outtype", outtype]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not out_file.is_file():
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        raise UserError(f"llama.cpp's converter failed on {model_dir.name}: {lines[-1] if lines else 'no output'}")
    return out_file


def quantize(tools: LlamaCppTools, src: Path, dst: Path, quant: str, threads: int | None = None) -> Path:
    """Quantize the GGUF `src` to `quant` with llama.cpp's quantizer."""
    threads = threads or os.cpu_count() or 1
    if tools.quantize_bin is not None:
        command = [str(tools.quantize_bin), str(src), str(dst), quant.upper(), str(threads)]
        result = subprocess.run(command, capture_output=True, text=True, errors="replace")
        failed = result.returncode != 0
        detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
    else:
        import llama_cpp

        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = QUANTIZED_TYPES[quant]
        params.nthread = threads
        failed = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params) != 0
        detail = "llama_model_quantize returned an error"
    if failed or not dst.is_file():
        raise UserError(f"llama.cpp's quantizer failed on {src.name} -> {quant}: {detail}")
    return dst


# ------------------------------------------------------------------------------------------------ Modelfile


def _go_string(text: str) -> str:
    """A Go template string literal for `text` (json.dumps escapes as Go's strconv.Unquote reads)."""
    return json.dumps(text, ensure_ascii=False)


def ollama_template(system_line: str) -> str:
    """EEVE's Human/Assistant format as an Ollama (Go) TEMPLATE. Ollama puts ``<s>`` in front as the bos token, so
    the template starts at the system line."""
    return (
        "{{- if .System }}{{ .System }}{{ else }}" + _go_string(system_line).join(("{{ ", " }}")) + "{{ end }}"
        "{{- range .Messages }}"
        '{{- if eq .Role "user" }}{{ "\\nHuman: " }}{{ .Content }}'
        '{{- else if eq .Role "assistant" }}{{ "\\nAssistant: " }}{{ .Content }}{{ "<|im_end|>" }}'
        "{{- end }}"
        "{{- end }}"
        '{{ "\\nAssistant:" }}'
    )


def render_modelfile(gguf_file: str, tokenizer, sampling=None) -> str:
    """An Ollama Modelfile for `gguf_file` (a name beside it): EEVE's template with the model's default system
    line, stops on the eos token and ``</s>``, and the project's chat sampling defaults."""
    from .sampling import SamplingConfig

    sampling = sampling or SamplingConfig()
    stops = list(dict.fromkeys([tokenizer.eos_token, PAD_TOKEN]))
    lines = [
        f"FROM ./{gguf_file}",
        "",
        f'TEMPLATE """{ollama_template(default_system_line(tokenizer))}"""',
        "",
        *(f'PARAMETER stop "{stop}"' for stop in stops),
        f"PARAMETER temperature {sampling.temperature}",
        f"PARAMETER top_p {sampling.top_p}",
        f"PARAMETER top_k {sampling.top_k}",
        f"PARAMETER repeat_penalty {sampling.repetition_penalty}",
        "PARAMETER num_ctx 4096",
        "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- model card


@dataclass
class GgufExport:
    """What an export wrote: the folder, each type's GGUF file name and size, and what it came from."""

    output: Path
    source: ModelSource
    add_space_prefix: bool
    files: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)


def gguf_name(output: Path, quant: str) -> str:
    return f"{output.name}-{quant}.gguf"


def render_gguf_card(export: GgufExport, repo_id: str | None = None) -> str:
    from .export import card_head, find_run_dir, training_description, training_sections

    source = export.source
    adapter = source.kind == "adapter"
    base = source.base if adapter else source.given
    title = repo_id.split("/")[-1] if repo_id else export.output.name
    run = find_run_dir(source.path) if adapter else None
    how, tags = training_description(run.recipe() if run else {})
    front = {
        "base_model": base,
        "library_name": "gguf",
        "language": ["ko"],
        "pipeline_tag": "text-generation",
        "tags": ["eeve", "gguf", "llama.cpp", "ollama", "korean", "honorifics", *tags],
    }
    first = next(iter(export.files.values()))
    out = [
        *card_head(front, title),
        (
            f"`{base}` {how} to answer in natural 존댓말, also when asked in 반말, merged into its base"
            if adapter
            else f"`{base}`"
        )
        + " as GGUF files for llama.cpp and Ollama, converted and quantized with llama.cpp's own tools (the "
        f"llama.cpp of llama-cpp-python {LLAMA_CPP_PYTHON_VERSION}).",
        "",
        "| file | type | size |",
        "|---|---|---:|",
        *(f"| `{name}` | {q} | {export.sizes[q] / 2**20:,.1f} MiB |" for q, name in export.files.items()),
        "",
        "## Checks",
        "",
        f"- Tokenization: the converter was given `add_prefix_space: {str(export.add_space_prefix).lower()}` "
        "(`tokenizer.ggml.add_space_prefix`), what transformers does after `<s>`, so llama.cpp turns every "
        "templated prompt into the token ids transformers gives. The project's tests check this on all of its "
        "evaluation prompts, and that greedy decoding of an f16 file follows transformers token for token.",
        "- Chat template: the GGUF carries the model's EEVE template (`Human:` / `Assistant:`) and the Modelfile's "
        "TEMPLATE renders the same text (Ollama adds `<s>` as the bos token). Stop on `<|im_end|>` and `</s>`.",
        "",
        "## Use",
        "",
        "```sh",
        f"ollama create eeve-polite -f Modelfile   # the Modelfile says FROM ./{first}",
        "ollama run eeve-polite",
        f"llama-cli -m {first} -cnv",
        f"llama-server -m {first} --jinja",
        "```",
        "",
    ]
    if adapter:
        out += training_sections(run)
        out.append("")
    return "\n".join(out)


def write_gguf_card(export: GgufExport, folder: Path, repo_id: str | None = None) -> Path:
    path = folder / CARD_FILE
    path.write_text(render_gguf_card(export, repo_id), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------- export


@contextlib.contextmanager
def _work_dir(beside: Path) -> Iterator[Path]:
    beside.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{beside.name}.work-", dir=beside.parent))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def export_gguf(
    model_path: str | Path,
    output_dir: str | Path,
    quants: str | list[str] = DEFAULT_QUANTS,
    overwrite: bool = False,
    llama_cpp_dir: str | Path | None = None,
    merge_dtype: str = "bfloat16",
    threads: int | None = None,
) -> GgufExport:
    """Write GGUF files of each type in `quants`, a Modelfile and a model card into `output_dir`.

    An adapter is merged into its base first (:func:`eeve_sft.inference.export.merge_adapter`). The folder is
    built beside `output_dir` and renamed into place at the end: a failure leaves nothing half-written.
    """
    from .export import DTYPES

    quants = parse_quants(quants)
    if merge_dtype not in DTYPES:
        raise UserError(f"--merge-dtype must be one of {', '.join(DTYPES)}, got '{merge_dtype}'")
    source = resolve_model_source(model_path)
    if not Path(source.path).is_dir():
        raise UserError(f"{model_path} is not a local adapter or model folder: the converter reads local files")
    output = Path(output_dir)
    check_output_dir(output, overwrite)
    tools = find_tools(llama_cpp_dir, need_quantizer=any(q in QUANTIZED_TYPES for q in quants))

    with _work_dir(output) as work, atomic_output_dir(output, overwrite) as building:
        if source.kind == "adapter":
            from .export import merge_adapter

            model_dir = merge_adapter(source.path, work / output.name, dtype=merge_dtype)
        else:
            model_dir = Path(source.path)
        tokenizer = load_saved_tokenizer(ModelSource(str(model_dir), "model", str(model_dir)))
        staged = stage_for_converter(model_dir, work / "staged" / output.name, tokenizer)
        written: dict[str, Path] = {}
        for quant in quants:
            if quant in CONVERTER_TYPES:
                written[quant] = convert(tools, staged, building / gguf_name(output, quant), quant)
        if any(q in QUANTIZED_TYPES for q in quants):
            f16 = written.get("f16") or convert(tools, staged, work / gguf_name(output, "f16"), "f16")
            for quant in quants:
                if quant in QUANTIZED_TYPES:
                    written[quant] = quantize(tools, f16, building / gguf_name(output, quant), quant, threads)
        export = GgufExport(
            output,
            source,
            space_after_special(tokenizer),
            files={q: written[q].name for q in quants},
            sizes={q: written[q].stat().st_size for q in quants},
        )
        (building / MODELFILE).write_text(render_modelfile(export.files[quants[0]], tokenizer), encoding="utf-8")
        write_gguf_card(export, building)
    return export


def push_gguf(export: GgufExport, repo_id: str, private: bool = True, api=None) -> str:
    """Upload the GGUF folder to `repo_id`, with the card rewritten to name the repo; return the repo URL."""
    from .export import upload_folder

    write_gguf_card(export, export.output, repo_id)
    return upload_folder(export.output, repo_id, private, "Upload GGUF files of the EEVE 존댓말 model", api)
