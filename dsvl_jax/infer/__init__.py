"""Inference: jitted KV-cache generation, sampling, chat."""
