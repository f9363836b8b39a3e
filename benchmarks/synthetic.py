"""An EEVE-shaped random-weight model, a tokenizer with EEVE's special-token ids, and synthetic conversations.

Training speed depends on tensor shapes and sequence lengths, not on weight or token values, so the benchmark
trains a random-weight Llama with the exact shapes of EEVE-Korean-Instruct-10.8B on conversations whose token
lengths follow a stated distribution. Everything here is deterministic for a given seed.

    python -m benchmarks.synthetic model /tmp/eeve-random          # needs a GPU: ~21.6 GB bf16 safetensors
    python -m benchmarks.synthetic data /tmp/synth --tokenizer /tmp/eeve-random
    python -m benchmarks.synthetic data /tmp/synth-learnable --tokenizer /tmp/eeve-random --learnable

Speed data's words are uniform random, so no model can lower its loss: two training runs agree whatever their
arithmetic. `--learnable` writes conversations of the same length distribution whose words follow a fixed random
successor table most of the time, a pattern a LoRA-trained model learns within a few hundred steps: loss curves of
two precisions or kernel paths can then be told apart.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

# EEVE-Korean-Instruct-10.8B-v1.0 (a SOLAR/Llama architecture): 48 layers, GQA 32/8 heads, untied embeddings.
EEVE_SHAPES = dict(
    num_hidden_layers=48,
    hidden_size=4096,
    intermediate_size=14336,
    num_attention_heads=32,
    num_key_value_heads=8,
    vocab_size=40960,
    max_position_embeddings=4096,
    rope_theta=10000.0,
    rms_norm_eps=1e-5,
)
# A few-MB model of the same layout for CPU smoke tests of the benchmark itself.
TINY_SHAPES = dict(
    EEVE_SHAPES,
    num_hidden_layers=2,
    hidden_size=64,
    intermediate_size=224,
    num_attention_heads=8,
    num_key_value_heads=2,
)

UNK, BOS, PAD, EOS = "<unk>", "<s>", "</s>", "<|im_end|>"
BOS_ID, PAD_ID, EOS_ID = 1, 2, 32000

# Length distribution of one conversation in tokens (template included): log-normal around a median of 350
# tokens, sigma 0.7 (mean ~450, 1% above 1,500), clipped to [32, 2048]; about 30% of the tokens are prompt
# (system line, user turn, template), the rest the trained assistant answer.
LENGTH_MEDIAN, LENGTH_SIGMA, LENGTH_MIN, LENGTH_MAX = 350, 0.7, 32, 2048
PROMPT_SHARE_MEAN = 0.30

# Learnable text: 2,000 words (a fixed random subset of the vocabulary); after each word comes its successor in a fixed
# random table with probability 0.7, else any of the 2,000. Entropy ~2.9 nats a token, against ln(40960) = 10.6 at the
# start. The table does not depend on the split's seed: train and eval follow the same pattern.
LEARNABLE_WORDS, LEARNABLE_FOLLOW, LEARNABLE_TABLE_SEED = 2000, 0.7, 20261202


def llama_config(tiny: bool = False):
    from transformers import LlamaConfig

    shapes = dict(TINY_SHAPES if tiny else EEVE_SHAPES)
    rope_theta = shapes.pop("rope_theta")
    return LlamaConfig(
        **shapes,
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
        hidden_act="silu",
        initializer_range=0.02,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
        use_cache=True,
    )


def word(i: int) -> str:
    return f"w{i}"


def build_tokenizer(vocab_size: int):
    """A word-level fast tokenizer with EEVE's layout: <unk>=0, <s>=1, </s>=2 (pad), <|im_end|>=32000 (eos).

    Every other id is a word piece '▁w<id>' (a space-prefixed word, as SentencePiece writes it), so a text of n
    space-separated 'w<id>' words is exactly n tokens and every character, spaces included, belongs to a token:
    assistant masks come out exactly as with EEVE's own tokenizer.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from eeve_sft.template import apply_eeve_template

    vocab = {UNK: 0, BOS: BOS_ID, PAD: PAD_ID, EOS: EOS_ID}
    for i in range(3, vocab_size):
        if i != EOS_ID:
            vocab["▁" + word(i)] = i
    raw = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    raw.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    raw.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw, unk_token=UNK, bos_token=BOS, eos_token=EOS, pad_token=PAD
    )
    apply_eeve_template(tokenizer)
    return tokenizer


def build_model(out_dir: Path, tiny: bool = False) -> None:
    """Random bf16 weights (normal, std 0.02) made on the GPU, saved as safetensors with the tokenizer."""
    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    config = llama_config(tiny)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    started = time.time()
    torch.manual_seed(0)
    with torch.device(device):
        config.dtype = torch.bfloat16
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        try:
            model = LlamaForCausalLM(config)  # transformers' own init: normal(0, 0.02), norms at 1
        finally:
            torch.set_default_dtype(previous)
    made = time.time()
    model.generation_config = GenerationConfig(bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    model.save_pretrained(out_dir, max_shard_size="5GB")
    build_tokenizer(config.vocab_size).save_pretrained(out_dir)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"model: {params / 1e9:.2f}B parameters, built on {device} in {made - started:.1f}s, "
        f"saved to {out_dir} in {time.time() - made:.1f}s",
        flush=True,
    )


def sample_length(rng: random.Random) -> int:
    length = round(math.exp(rng.gauss(math.log(LENGTH_MEDIAN), LENGTH_SIGMA)))
    return min(max(length, LENGTH_MIN), LENGTH_MAX)


def learnable_words(vocab_size: int, seed: int):
    """A `text(count)` function writing learnable text (see LEARNABLE_WORDS) from its own random stream."""
    table_rng = random.Random(LEARNABLE_TABLE_SEED)
    words = [i for i in table_rng.sample(range(3, vocab_size), LEARNABLE_WORDS + 1) if i != EOS_ID][:LEARNABLE_WORDS]
    successor = {w: table_rng.choice(words) for w in words}
    rng = random.Random(seed)

    def text(count: int) -> str:
        ids = [rng.choice(words)]
        for _ in range(count - 1):
            ids.append(successor[ids[-1]] if rng.random() < LEARNABLE_FOLLOW else rng.choice(words))
        return " ".join(map(word, ids))

    return text


def make_rows(n: int, seed: int, tokenizer, learnable: bool = False) -> list[dict]:
    """`n` single-turn conversations whose templated token length follows the distribution above; their words
    uniform random, or with `learnable` from :func:`learnable_words` (lengths drawn from the same distribution)."""
    rng = random.Random(seed)
    vocab_size = len(tokenizer)
    # Template tokens around the two turns: <s>, the default system line, '\nHuman:', '\nAssistant:', <|im_end|>.
    probe = [{"role": "user", "content": "w5"}, {"role": "assistant", "content": "w5"}]
    overhead = len(tokenizer.apply_chat_template(probe, tokenize=True, return_dict=True)["input_ids"]) - 2

    def uniform(count: int) -> str:
        ids = (rng.randrange(3, vocab_size) for _ in range(count))
        return " ".join(word(i if i != EOS_ID else 3) for i in ids)

    text = learnable_words(vocab_size, seed) if learnable else uniform
    rows = []
    for _ in range(n):
        total = sample_length(rng)
        share = min(max(rng.betavariate(6, 14), 0.05), 0.9)  # prompt share, mean 0.30
        prompt = max(round(share * total), overhead + 2)
        user = max(prompt - overhead, 2)
        answer = max(total - overhead - user, 2)
        messages = [{"role": "user", "content": text(user)}, {"role": "assistant", "content": text(answer)}]
        rows.append({"messages": messages})
    return rows


def write_dataset(
    out_dir: Path, tokenizer, train: int, eval_rows: int, seed: int = 1234, learnable: bool = False
) -> dict:
    """train.jsonl and eval.jsonl (the layout of data_prep/build_dataset.py's output); returns length statistics."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = {}
    for split, n, split_seed in (("train", train, seed), ("eval", eval_rows, seed + 1)):
        rows = make_rows(n, split_seed, tokenizer, learnable)
        with open(out_dir / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        stats[split] = n
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("model", help="build and save the random-weight model and its tokenizer")
    m.add_argument("out_dir")
    m.add_argument("--tiny", action="store_true", help="a tiny model of the same layout (CPU smoke tests)")
    d = sub.add_parser("data", help="write synthetic train.jsonl / eval.jsonl")
    d.add_argument("out_dir")
    d.add_argument("--tokenizer", required=True, help="directory holding the tokenizer (the model directory)")
    d.add_argument("--train", type=int, default=3000)
    d.add_argument("--eval", type=int, default=64)
    d.add_argument("--seed", type=int, default=1234)
    d.add_argument("--learnable", action="store_true", help="words with a learnable pattern (loss-curve checks)")
    args = parser.parse_args()
    if args.command == "model":
        build_model(Path(args.out_dir), args.tiny)
    else:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
        print(write_dataset(Path(args.out_dir), tokenizer, args.train, args.eval, args.seed, args.learnable))


if __name__ == "__main__":
    main()
