"""Build the tiny demo model in assets/demo-model: a byte-fallback BPE tokenizer trained on the repo's own Korean
text and a random-weight Llama with EEVE's special-token layout. CPU tests and recipes/demo_cpu.yaml use it.

    python scripts/build_demo_model.py [--output assets/demo-model]

Layout, as in EEVE: <unk>=0, <s>=1, </s>=2 (the pad token), byte tokens <0x00>..<0xFF> next, the learned pieces,
then <|im_end|> (the eos token) as an added special token. The output is deterministic.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from eeve_sft.errors import run_cli
from eeve_sft.template import DEFAULT_SYSTEM_PROMPT, apply_eeve_template

REPO = Path(__file__).resolve().parent.parent
CORPUS_FILES = ["data/demo/train.jsonl", "data/demo/eval.jsonl", "eval/prompts_banmal.jsonl"]
SPECIALS = ["<unk>", "<s>", "</s>"]
BYTE_TOKENS = [f"<0x{b:02X}>" for b in range(256)]
EOS = "<|im_end|>"


def corpus_lines() -> list[str]:
    lines = [DEFAULT_SYSTEM_PROMPT, "Human:", "Assistant:"]
    for name in CORPUS_FILES:
        path = REPO / name
        if not path.exists():
            sys.exit(f"error: corpus file missing: {name}")
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                lines.extend(m["content"] for m in json.loads(line)["messages"])
    return lines


def train_tokenizer(lines: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    metaspace = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    draft = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    draft.pre_tokenizer = metaspace
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIALS) - len(BYTE_TOKENS), show_progress=False, limit_alphabet=1500
    )
    draft.train_from_iterator(lines, trainer=trainer)

    # Rebuild with EEVE's id layout: specials, then the 256 byte tokens, then the learned pieces and merges.
    learned = sorted(draft.get_vocab().items(), key=lambda item: item[1])
    vocab = {token: i for i, token in enumerate(SPECIALS + BYTE_TOKENS)}
    for token, _ in learned:
        vocab.setdefault(token, len(vocab))
    merges = [tuple(m) for m in json.loads(draft.to_str())["model"]["merges"]]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    return tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=str(REPO / "assets/demo-model"))
    parser.add_argument("--vocab-size", type=int, default=2048)
    args = parser.parse_args()
    import torch  # after argument parsing: --help stays fast
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    raw = train_tokenizer(corpus_lines(), args.vocab_size)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw, unk_token="<unk>", bos_token="<s>", eos_token=EOS, pad_token="</s>"
    )
    tokenizer.add_special_tokens({"eos_token": EOS})
    apply_eeve_template(tokenizer)
    eos_id = tokenizer.convert_tokens_to_ids(EOS)

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=224,  # EEVE's 14336/4096 = 3.5 ratio
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=2,  # grouped-query attention, 4 heads per KV head as in EEVE's 32/8
        max_position_embeddings=4096,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=eos_id,
        pad_token_id=2,
    )
    model = LlamaForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=[eos_id, 2], pad_token_id=2)

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    size = sum(p.stat().st_size for p in out.iterdir()) / 2**20
    print(
        f"demo model: {sum(p.numel() for p in model.parameters()):,} parameters, vocab {len(tokenizer)}, "
        f"eos {EOS}={eos_id}, {size:.1f} MiB in {out}"
    )


if __name__ == "__main__":
    run_cli(main)
