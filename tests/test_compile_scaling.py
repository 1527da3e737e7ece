"""Compile cost does not grow with depth: the layers run under nn.scan.

Evidence without timing: the lowered StableHLO of a 24-layer LLM has the size of a
2-layer one (a Python loop would repeat the block 24 times), for the forward pass and
for its gradient. experiments/bench_compile.py measures the compile times themselves.
"""

import pytest
from conftest import tiny_config

from dsvl_jax.models.init import lower_llm


def lowered_text(num_layers: int, grad: bool) -> str:
  return lower_llm(tiny_config("siglip"), num_layers, grad).as_text()


@pytest.mark.parametrize("grad", [False, True], ids=["forward", "grad"])
def test_lowered_program_size_is_flat_in_depth(grad):
  shallow, deep = len(lowered_text(2, grad)), len(lowered_text(24, grad))
  print(f"{'grad' if grad else 'forward'}: {shallow} chars at 2 layers, {deep} at 24")
  assert deep < 1.1 * shallow
