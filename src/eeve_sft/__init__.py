"""LoRA/QLoRA fine-tuning recipes for EEVE-Korean-Instruct with TRL's SFTTrainer."""

from .quiet import quiet_imports

__version__ = "0.1.0"

quiet_imports()  # before any module of the package imports bitsandbytes (through peft or transformers)
