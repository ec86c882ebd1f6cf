"""The sequence transformer: shapes, float32 params with bf16 compute, adaLN-Zero init,
noise conditioning, sizes of the configs, bad settings, and sharding like the other models."""

import functools
import pathlib

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from infonoise_jax import edm, train
from infonoise_jax.models import SequenceTransformer, make_model, param_count
from infonoise_jax.schedules import SCHEDULES
from infonoise_jax.validation import load_config_file

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHAPE = (16, 5)


def _inputs(batch: int = 3):
  x = jax.random.normal(jax.random.key(0), (batch, *SHAPE))
  return x, jnp.linspace(-1.0, 1.0, batch)


def _perturbed(module, x, c, seed=1):
  """Parameters with every branch active (the init has zero gates and a ~0 output layer)."""
  v = module.init(jax.random.key(0), x, c)
  # one draw for all parameters: a draw per leaf compiles a random program per leaf shape
  flat, unravel = jax.flatten_util.ravel_pytree(v)
  return unravel(flat + 0.05 * jax.random.normal(jax.random.key(seed), flat.shape))


@pytest.mark.parametrize("pos", ["sinusoidal", "learned"])
def test_shapes_dtypes_and_bfloat16_close_to_float32(pos):
  x, c = _inputs()
  f32 = SequenceTransformer(width=32, depth=2, num_heads=4, pos_embedding=pos)
  v = _perturbed(f32, x, c)
  shapes = jax.eval_shape(lambda: f32.clone(dtype=jnp.bfloat16).init(jax.random.key(0), x, c))
  assert {p.dtype for p in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.float32)}
  y32 = f32.apply(v, x, c)
  y16 = f32.clone(dtype=jnp.bfloat16).apply(v, x, c)
  assert y32.shape == x.shape and y16.dtype == jnp.float32
  rel = float(jnp.linalg.norm(y16 - y32) / jnp.linalg.norm(y32))
  assert 1e-5 < rel < 5e-2  # bf16 really ran and stays close


def test_adaln_zero_init_gives_c_skip_x_and_noise_conditions_the_output():
  x, c = _inputs()
  m = SequenceTransformer(width=32, depth=2, num_heads=2, zero_init_scale=0.0)
  v = m.init(jax.random.key(0), x, c)
  sigma = jnp.exp(4.0 * c)
  d = edm.denoise(lambda xi, cn: m.apply(v, xi, cn), x, sigma, 0.4)
  c_skip = (0.16 / (sigma**2 + 0.16))[:, None, None]
  np.testing.assert_array_equal(d, c_skip * x)
  v = _perturbed(m, x, c)
  same_x = jnp.broadcast_to(x[:1], x.shape)
  y = m.apply(v, same_x, c)  # one input, three noise levels: three different outputs
  assert float(jnp.max(jnp.abs(y[0] - y[1]))) > 1e-3
  # positions matter: permuting the input's positions does not just permute the output
  perm = jnp.arange(SHAPE[0])[::-1]
  permuted_out = m.apply(v, x[:, perm], c)
  assert float(jnp.max(jnp.abs(permuted_out - m.apply(v, x, c)[:, perm]))) > 1e-3


@pytest.mark.parametrize("domain, lo, hi", [("dna", 10e6, 40e6), ("text", 10e6, 40e6)])
def test_gpu_configs_are_10_to_40m_parameters(domain, lo, hi):
  c = load_config_file(ROOT / "configs" / f"{domain}.py")
  shape = (c.data.seq_len, 4 if domain == "dna" else 90)
  assert lo < param_count(make_model(c, shape), shape) < hi
  assert c.model.dtype == "bfloat16"
  assert c.schedule.name == "infonoise" and c.schedule.infonoise.gate == "pinned"
  assert c.schedule.infonoise.gate_pivot == 0.2
  for name in SCHEDULES:  # a variant per schedule name
    assert load_config_file(ROOT / "configs" / f"{domain}.py", name).schedule.name == name
  with pytest.raises(ValueError, match="variant"):
    load_config_file(ROOT / "configs" / f"{domain}.py", "nosuch")


@pytest.mark.parametrize(
  "model, shape, key",
  [
    (dict(num_heads=3), SHAPE, "model.num_heads"),
    (dict(width=31), SHAPE, "model.width"),
    (dict(depth=0), SHAPE, "model.depth"),
    (dict(pos_embedding="rope"), SHAPE, "model.pos_embedding"),
    (dict(), (8, 8, 1), "model.name"),  # images are not token windows
  ],
)
def test_invalid_settings_raise_naming_the_key(model, shape, key):
  c = default.get_config()
  c.model.name, c.model.width, c.model.num_heads = "transformer", 32, 4
  c.model.update(model)
  with pytest.raises(ValueError, match=key.replace(".", r"\.")):
    make_model(c, shape)


@functools.cache
def _dna_tiny():
  c = load_config_file(ROOT / "configs" / "dna.py", "cpu")
  c.update_from_flattened_dict(
    {
      "data.path": "/usr/share/kaptive/reference_database/Klebsiella_o_locus_primary_reference.gbk",
      "data.seq_len": 16,
      "model.width": 32,
      "model.depth": 1,
      "model.num_heads": 2,
      "train.batch_size": 16,
      "schedule.infonoise.warmup_steps": 2,
      "schedule.infonoise.refresh_every": 2,
      "schedule.infonoise.min_count": 1,
      "schedule.infonoise.num_bins": 16,
    }
  )
  return c


def _run(devices, num_steps=4):
  run = train.Run(_dna_tiny(), "/tmp/unused", devices)
  state = run.init_fn()
  for step in range(num_steps):
    state, _ = run.train_step(state, run.global_batch(run.pipeline.batch(step)))
  return jax.device_get(state)


def test_one_device_and_eight_devices_give_the_same_state():
  s1, s8 = _run(jax.devices()[:1]), _run(jax.devices())
  for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s8), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6)
