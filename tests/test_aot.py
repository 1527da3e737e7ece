"""Ahead-of-time compilation of the sharded train step for a real TPU topology (like
MaxText's train_compile_test): libtpu (requirements-test.txt) describes a v5p:2x2x2
slice as abstract devices; nothing is allocated and no TPU is needed."""

import pytest

pytest.importorskip(
    "libtpu", reason="libtpu (requirements-test.txt) compiles for TPU topologies on a CPU host"
)

from train_fixtures import run_config  # noqa: E402

from dsvl_jax.train import aot  # noqa: E402


@pytest.mark.parametrize("family, impl", [("siglip", "splash"), ("hybrid", "auto")])
def test_sharded_step_compiles_for_v5p_with_splash_attention(family, impl):
  """'auto' (the stage configs' setting) resolves to splash for a TPU mesh."""
  config = run_config(
      family,
      **{
          "mesh.shape": (2, 2, 2),
          "mesh.num_devices": 0,
          "data.global_batch_size": 8,
          "model.compute.attention_impl": impl,
          "model.compute.dtype": "bfloat16",
          "model.compute.remat_policy": "full",
      },
  )
  r = aot.compile_step(config, "v5p:2x2x2")
  assert r.chips == 8 and r.mesh == {"data": 2, "fsdp": 2, "tensor": 2}
  # the Pallas kernels really are in the program: forward, and both backward passes
  assert r.kernels == (
      "splash_mqa_dkv_segmented_no_residuals",
      "splash_mqa_dq_segmented_no_residuals",
      "splash_mqa_fwd_segmented_residuals",
  ), r.kernels
  assert 0 < r.total_bytes < r.hbm_bytes
  # the donated state comes back in place
  assert r.alias_bytes > 0
  assert r.xla_flops > 0 and "per device" in r.report
  text = r.table(step_seconds=1.0)
  assert "fits: yes" in text and "MFU" in text and "s/step" in text


def test_an_unknown_generation_is_named():
  with pytest.raises(ValueError, match="'v9'"):
    aot.topology_devices("v9:2x2")
