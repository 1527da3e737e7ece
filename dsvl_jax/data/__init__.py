"""Inputs: image processing, tokenizer, conversation template, batching (and, later,
grain sources, modality mixing and packing)."""
