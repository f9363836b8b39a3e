"""Training: a recipe in, a run folder out (recipe, data, model, trainer, run folder)."""
