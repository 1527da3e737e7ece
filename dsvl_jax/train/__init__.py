"""Training: the paper's three-stage recipe as an optax loop (see trainer.py).

Kept import-light: configs/*.py import `dsvl_jax.train.recipe`.
"""
