"""Judging trained models: 존댓말 rate on 반말 prompts, eval loss, lm-eval, run comparison."""
