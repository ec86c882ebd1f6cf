"""MFU pieces (infonoise_jax/flops.py): the peak table, XLA's cost analysis in every shape it
comes in, the jaxpr count of matmuls and convolutions, and the fallbacks between them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infonoise_jax import flops
from infonoise_jax.validation import default_config


@pytest.mark.parametrize(
  "kind, bf16, f32",
  [
    ("NVIDIA H200", 989.4, 494.7),
    ("NVIDIA H200 NVL", 835.5, 417.5),
    ("NVIDIA H100 80GB HBM3", 989.4, 494.7),
    ("NVIDIA H100 PCIe", 756.5, 378.0),
    ("NVIDIA H100 NVL", 835.5, 417.5),
    ("NVIDIA A100-SXM4-80GB", 312.0, 156.0),
    ("NVIDIA A100 80GB PCIe", 312.0, 156.0),
    ("TPU v4", 275.0, 275.0),
    ("TPU v5 lite", 197.0, 197.0),
    ("TPU v5p", 459.0, 459.0),
    ("TPU v5", 459.0, 459.0),
    ("TPU v6 lite", 918.0, 918.0),
  ],
)
def test_peak_table_knows_the_usual_accelerators(kind, bf16, f32):
  assert flops.peak_tflops(kind, "bfloat16") == bf16
  assert flops.peak_tflops(kind, "float32") == f32


@pytest.mark.parametrize("kind", ["cpu", "NVIDIA GeForce RTX 4090", "TPU v2", ""])
def test_unknown_device_has_no_peak_and_says_how_to_set_one(kind):
  assert flops.peak_tflops(kind, "bfloat16") is None
  value = flops.mfu(1e12, 10.0, flops.peak_tflops(kind, "bfloat16"), 1)
  assert value is None
  text = flops.describe_mfu(value, kind)
  assert text == f"n/a (unknown peak for {kind}; set system.peak_tflops)"
  assert "nan" not in text.lower()


def test_configured_peak_overrides_the_table():
  assert flops.peak_tflops("cpu", "float32", override=2.5) == 2.5
  assert flops.peak_tflops("NVIDIA H200", "bfloat16", override=500.0) == 500.0
  c = default_config()
  assert c.system.peak_tflops == 0.0  # 0 = the table
  c.system.peak_tflops = 4.0
  kind, peak = flops.device_peak(c)
  assert kind == jax.devices()[0].device_kind and peak == 4.0


def test_mfu_is_flops_rate_over_the_peak_of_all_devices():
  # 62 TFLOP per step at 6 steps/s on one 989 TFLOP/s device: 37.6%
  assert flops.mfu(62e12, 6.0, 989.4, 1) == pytest.approx(62 * 6 / 989.4)
  assert flops.mfu(62e12, 6.0, 989.4, 2) == pytest.approx(62 * 6 / 989.4 / 2)
  assert flops.describe_mfu(0.4132, "NVIDIA H200") == "41.3%"
  assert flops.mfu(float("nan"), 6.0, 989.4, 1) is None


class _FakeCompiled:
  def __init__(self, cost=None, error=None):
    self.cost, self.error = cost, error

  def cost_analysis(self):
    if self.error is not None:
      raise self.error
    return self.cost


@pytest.mark.parametrize(
  "compiled, expected",
  [
    (_FakeCompiled({"flops": 5e9, "bytes accessed": 1.0}), 5e9),  # jax >= 0.4.3x: a dict
    (_FakeCompiled([{"flops": 7e9}]), 7e9),  # older jax: one dict per program
    (_FakeCompiled(None), None),  # Lowered.cost_analysis on a PJRT plugin (GPU) backend
    (_FakeCompiled([]), None),
    (_FakeCompiled({"bytes accessed": 1.0}), None),  # no 'flops' key
    (_FakeCompiled({"flops": -1.0}), None),  # "unknown"
    (_FakeCompiled({"flops": 0.0}), None),
    (_FakeCompiled({"flops": float("nan")}), None),
    (_FakeCompiled(error=NotImplementedError("no cost analysis on this platform")), None),
    (_FakeCompiled(error=RuntimeError("UNIMPLEMENTED")), None),
  ],
)
def test_xla_flops_reads_every_shape_of_cost_analysis(compiled, expected):
  assert flops.xla_flops(compiled) == expected


def _conv(x, w, stride=1):
  return jax.lax.conv_general_dilated(
    x, w, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
  )


def test_jaxpr_count_of_matmuls_and_convolutions():
  a, b = jnp.ones((4, 8)), jnp.ones((8, 16))
  assert flops.jaxpr_flops(jax.make_jaxpr(jnp.matmul)(a, b)) == 2 * 4 * 8 * 16
  batched = jax.make_jaxpr(lambda p, q: jnp.einsum("bij,bjk->bik", p, q))
  assert flops.jaxpr_flops(batched(jnp.ones((3, 4, 8)), jnp.ones((3, 8, 5)))) == 2 * 3 * 4 * 8 * 5
  # 3x3 SAME conv on 9x9: taps reading padding are not counted (per dim 7*3 + 2*2 = 25 pairs)
  x, w = jnp.ones((2, 9, 9, 3)), jnp.ones((3, 3, 3, 4))
  assert flops.jaxpr_flops(jax.make_jaxpr(_conv)(x, w)) == 2 * 2 * 4 * 3 * 25 * 25


def test_jaxpr_count_runs_into_nested_programs():
  a, b = jnp.ones((4, 8)), jnp.ones((8, 8))
  one = 2 * 4 * 8 * 8
  scan = lambda a, b: jax.lax.scan(lambda c, _: (c @ b, None), a, None, length=5)[0]
  assert flops.jaxpr_flops(jax.make_jaxpr(scan)(a, b)) == 5 * one
  cond = lambda p, a, b: jax.lax.cond(p, lambda: (a @ b) @ b, lambda: a @ b)
  assert flops.jaxpr_flops(jax.make_jaxpr(cond)(True, a, b)) == 2 * one  # the costlier branch
  jitted = jax.jit(lambda a, b: jax.checkpoint(lambda a: a @ b)(a))
  assert flops.jaxpr_flops(jax.make_jaxpr(jitted)(a, b)) == one


def test_jaxpr_count_matches_xla_on_cpu_for_convolution_gradients():
  """Forward, input-gradient (lhs-dilated) and weight-gradient convolutions, strided or not:
  the jaxpr count is XLA's count less the elementwise work."""
  x, w = jnp.ones((2, 9, 9, 3)), jnp.ones((3, 3, 3, 4))
  for stride in (1, 2):
    f = jax.grad(lambda x, w, s=stride: jnp.sum(jnp.sin(_conv(x, w, s))), argnums=(0, 1))
    ours = flops.jaxpr_flops(jax.make_jaxpr(f)(x, w))
    xla = flops.xla_flops(jax.jit(f).lower(x, w).compile())
    assert ours <= xla <= 1.05 * ours
    fwd = flops.jaxpr_flops(jax.make_jaxpr(lambda x, w, s=stride: _conv(x, w, s))(x, w))
    assert fwd == flops.xla_flops(
      jax.jit(lambda x, w, s=stride: _conv(x, w, s)).lower(x, w).compile()
    )


def test_step_flops_prefers_xla_unless_it_counts_less_than_the_jaxpr():
  a, b = jnp.ones((4, 8)), jnp.ones((8, 8))
  scan = lambda a, b: jax.lax.scan(lambda c, _: (jnp.tanh(c @ b), None), a, None, length=5)[0]
  jaxpr = jax.make_jaxpr(scan)(a, b)
  floor = 5 * 2 * 4 * 8 * 8
  # XLA counts a loop body once: below the floor, so the jaxpr count is used.
  real = flops.step_flops(jaxpr, jax.jit(scan).lower(a, b).compile())
  assert real.flops == floor and real.xla is not None and real.xla < floor
  assert "jaxpr" in real.source
  used = flops.step_flops(jaxpr, _FakeCompiled({"flops": 1.5 * floor}))
  assert used.flops == 1.5 * floor and used.source == "XLA cost analysis"
  per_device = flops.step_flops(jaxpr, _FakeCompiled({"flops": 0.75 * floor}), num_devices=2)
  assert per_device.flops == 1.5 * floor
  for missing in (None, _FakeCompiled(None), _FakeCompiled({"flops": 1.0})):
    f = flops.step_flops(jaxpr, missing)
    assert f.flops == floor and np.isfinite(f.flops)
