"""LoRA/QLoRA fine-tuning recipes for EEVE-Korean-Instruct with TRL's SFTTrainer."""

__version__ = "0.1.0"
