"""Compile cost does not grow with depth: the layers run under nn.scan.

Evidence without timing: the lowered StableHLO of a 24-layer LLM has the size of a
2-layer one (a Python loop would repeat the block 24 times), for the forward pass and
for its gradient. experiments/bench_compile.py measures the compile times themselves.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import pytest

from conftest import tiny_config
from dsvl_jax.models.llm import LLM


def lowered_text(num_layers: int, grad: bool) -> str:
  cfg = tiny_config("siglip")
  llm_cfg = dataclasses.replace(cfg.llm, num_layers=num_layers)
  model = LLM(llm_cfg, cfg.compute)
  b, t = 2, 32
  embeds = jax.ShapeDtypeStruct((b, t, llm_cfg.hidden_size), jnp.float32)
  positions = jax.ShapeDtypeStruct((b, t), jnp.int32)
  params = jax.eval_shape(functools.partial(model.init, jax.random.key(0)), embeds, positions)

  def forward(p, e, pos):
    return model.apply(p, e, pos)[0]

  fn = jax.grad(lambda p, e, pos: jnp.sum(forward(p, e, pos))) if grad else forward
  return jax.jit(fn).lower(params, embeds, positions).as_text()


@pytest.mark.parametrize("grad", [False, True], ids=["forward", "grad"])
def test_lowered_program_size_is_flat_in_depth(grad):
  shallow, deep = len(lowered_text(2, grad)), len(lowered_text(24, grad))
  print(f"{'grad' if grad else 'forward'}: {shallow} chars at 2 layers, {deep} at 24")
  assert deep < 1.1 * shallow
