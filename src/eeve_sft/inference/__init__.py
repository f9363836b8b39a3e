"""Using a trained model: loading it, generating answers (fast path), chat and export."""
