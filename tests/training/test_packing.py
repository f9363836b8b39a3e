"""Packing through SFTTrainer's own collator: no attention across packed samples, so each sample's loss is its loss unpacked."""

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM
from trl import SFTConfig, SFTTrainer

from eeve_sft.training.data import IGNORE_INDEX, tokenize_dataset
from helpers import DEMO_MODEL, MULTI, SINGLE

THIRD = [
    {"role": "user", "content": "하늘은 왜 파래?"},
    {"role": "assistant", "content": "햇빛이 공기 분자에 흩어지기 때문이에요."},
]


def sample_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token loss of one sequence."""
    return torch.nn.functional.cross_entropy(logits[:-1], labels[1:], ignore_index=IGNORE_INDEX, reduction="sum")


def test_packed_batch_gives_each_sample_its_unpacked_loss(demo_tokenizer, tmp_path):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(DEMO_MODEL, dtype=torch.float32, attn_implementation="sdpa").eval()
    rows, _ = tokenize_dataset(
        Dataset.from_list([{"messages": m} for m in (SINGLE, MULTI, THIRD)]),
        demo_tokenizer,
        max_length=1024,
        keep_messages=True,
    )
    args = SFTConfig(
        output_dir=str(tmp_path),
        packing=True,
        max_length=1024,
        per_device_train_batch_size=1,
        use_cpu=True,
        report_to="none",
        shuffle_dataset=False,
        assistant_only_loss=True,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=rows, processing_class=demo_tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == 1
    positions = batch["position_ids"][0]
    starts = (positions == 0).nonzero().flatten().tolist()
    assert len(starts) == 3, "the three samples share one packed row"

    with torch.no_grad():
        packed_logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        concatenated_logits = model(input_ids=batch["input_ids"]).logits[0]  # plain causal attention, for contrast
    bounds = starts + [batch["input_ids"].shape[1]]
    leaked = False
    for begin, end in zip(bounds, bounds[1:], strict=False):
        ids, labels = batch["input_ids"][0, begin:end], batch["labels"][0, begin:end]
        with torch.no_grad():
            alone = model(input_ids=ids[None]).logits[0]
        torch.testing.assert_close(packed_logits[begin:end], alone, atol=1e-4, rtol=1e-4)
        assert torch.allclose(sample_losses(packed_logits[begin:end], labels), sample_losses(alone, labels), atol=1e-4)
        leaked |= not torch.allclose(concatenated_logits[begin:end], alone, atol=1e-4)
    assert leaked, "without per-sample positions, later samples would attend to earlier ones"

    # Packing keeps the labels: the same trained tokens as the unpacked examples.
    trained = int((batch["labels"] != IGNORE_INDEX).sum())
    assert trained == sum(sum(label != IGNORE_INDEX for label in labels[1:]) for labels in rows["labels"])
