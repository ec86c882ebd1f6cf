"""Tests for infonoise_jax.models: SongUNet (DDPM++ / NCSN++) and the MLP denoiser.

Independent references: the PyTorch SongUNet of NVlabs/edm (`training/networks.py`, run with
torch 2.13 CPU) for parameter counts and for golden outputs of tiny nets with deterministic
weights; EDM's preconditioning for the zero-network limit D = c_skip x.
"""

import functools
import importlib.util
import pathlib
import zlib

import flax
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from infonoise_jax import edm
from infonoise_jax.models import MLPDenoiser, SongUNet, make_model, param_count, unet_layers

CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"


def _load_config(name: str, variant: str = ""):
  spec = importlib.util.spec_from_file_location(f"cfg_{name}", CONFIGS / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


def _config(**model):
  """Default config with `model` overrides; the network is a U-Net unless `name` says else."""
  c = default.get_config()
  c.model.name = "unet"
  for k, v in model.items():
    setattr(c.model, k, v)
  return c


def _tiny_unet_config(arch: str, **extra):
  """8x8 U-Net small enough to compile in seconds: 16 channels, one block per level."""
  kw = dict(name="unet", arch=arch, model_channels=16, channel_mult=(1, 2), num_blocks=1)
  kw.update(attn_resolutions=(4,), dropout=0.0)
  return _config(**{**kw, **extra})


@functools.cache
def _jit(module):
  """Compiled (init, apply) per module configuration, shared across tests (compiles are slow)."""
  return jax.jit(module.init), jax.jit(module.apply, static_argnames="train")


def _init(module, x, c):
  # rbg keys: same init law, but compile in seconds on CPU where threefry init takes ~10x longer.
  return _jit(module)[0]({"params": jax.random.key(0, impl="unsafe_rbg")}, x, c)


def _apply(module, variables, x, c, **kwargs):
  return _jit(module)[1](variables, x, c, **kwargs)


def _inputs(shape, batch=2):
  x = np.random.default_rng(1).standard_normal((batch, *shape)).astype(np.float32)
  return jnp.asarray(x), jnp.asarray([-1.2, 0.7][:batch], jnp.float32)


def _golden_params(module, x, c):
  """Deterministic weights keyed by parameter path; the PyTorch side used the same rule."""
  shapes = jax.eval_shape(lambda: module.init({"params": jax.random.key(0)}, x, c))["params"]
  flat = {}
  for path, s in flax.traverse_util.flatten_dict(shapes).items():
    rng = np.random.default_rng(zlib.crc32("/".join(path).encode()))
    if path[-1] == "scale":
      v = 1.0 + 0.3 * rng.standard_normal(s.shape)
    elif path[-1] == "bias":
      v = 0.3 * rng.standard_normal(s.shape)
    else:
      v = rng.standard_normal(s.shape) / np.sqrt(np.prod(s.shape[:-1]))
    flat[path] = jnp.asarray(v, jnp.float32)
  return {"params": flax.traverse_util.unflatten_dict(flat)}


# Outputs of EDM's PyTorch SongUNet (img 8, 3 channels, model_channels 16, channel_mult [1, 2],
# num_blocks 1, attn [4], EDM's arch settings), weights from `_golden_params`, the Fourier
# frequencies replaced by ours, input `_inputs((8, 8, 3))` (transposed to NCHW).
TORCH_GOLDEN = {
  "ddpmpp": dict(
    pix12=[[-1.263988, 1.243075, -0.920182], [-1.516724, 1.590521, -0.171953]],
    pix56=[[-0.978622, 1.203274, -0.560378], [-0.954656, 1.46892, -0.321804]],
    absmean=[[0.89374, 1.185882, 0.297379], [0.915975, 1.207897, 0.297407]],
  ),
  "ncsnpp": dict(
    pix12=[[-1.028029, 1.349809, -0.725166], [-1.460537, 1.434297, -0.035446]],
    pix56=[[-0.958345, 1.098698, -0.398762], [-0.912179, 1.179223, 0.138472]],
    absmean=[[0.881991, 1.144213, 0.255727], [0.9149, 1.101839, 0.245588]],
  ),
}


@pytest.mark.parametrize("arch", ["ddpmpp", "ncsnpp"])
def test_unet_matches_pytorch_reference(arch):
  module = make_model(_tiny_unet_config(arch), (8, 8, 3))
  x, c = _inputs((8, 8, 3))
  y = _apply(module, _golden_params(module, x, c), x, c)
  assert y.shape == x.shape and y.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(y)))
  gold = TORCH_GOLDEN[arch]
  np.testing.assert_allclose(y[:, 1, 2, :], gold["pix12"], atol=2e-5)
  np.testing.assert_allclose(y[:, 5, 6, :], gold["pix56"], atol=2e-5)
  np.testing.assert_allclose(jnp.abs(y).mean(axis=(1, 2)), gold["absmean"], atol=2e-5)


def test_cifar10_parameter_counts_match_edm():
  # Reference: sum(p.numel() for p in SongUNet(...).parameters()) of EDM's PyTorch code.
  config = _load_config("cifar10_edm")
  ddpmpp = make_model(config, (32, 32, 3))
  assert param_count(ddpmpp, (32, 32, 3)) == 55_732_739  # no augmentation labels
  # EDM's CIFAR-10 recipe feeds 9 augmentation labels through a bias-free 9 -> 128 linear.
  assert param_count(ddpmpp.clone(augment_dim=9), (32, 32, 3)) == 55_733_891
  ncsnpp = make_model(_load_config("cifar10_edm", "ncsnpp"), (32, 32, 3))
  assert (ncsnpp.embedding_type, ncsnpp.encoder_type) == ("fourier", "residual")
  assert ncsnpp.resample_filter == (1, 3, 3, 1) and ncsnpp.channel_mult_noise == 2
  assert param_count(ncsnpp, (32, 32, 3)) == 56_395_523
  assert param_count(ncsnpp.clone(augment_dim=9), (32, 32, 3)) == 56_397_827


def test_cifar10_infonoise_config_changes_only_the_schedule():
  edm_c = _load_config("cifar10_edm")
  info_c = _load_config("cifar10_infonoise")
  assert info_c.schedule.name == "infonoise" and info_c.schedule.infonoise.gate_pivot == 0.15
  for section in ("data", "edm", "model", "optim", "train", "sampler"):
    assert info_c[section].to_dict() == edm_c[section].to_dict(), section
  assert edm_c.train.num_steps * edm_c.train.batch_size == 200_000_000
  assert set(edm_c.to_dict()) == set(default.get_config().to_dict())


@pytest.mark.parametrize("shape", [(2,), (6, 6, 1)])
def test_mlp_shapes_and_finite(shape):
  module = make_model(_config(name="mlp", hidden_dims=(32, 48)), shape)
  x, c = _inputs(shape)
  y = _apply(module, _init(module, x, c), x, c)
  assert y.shape == x.shape and y.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(y)))


def test_xavier_init_gain():
  # EDM: weight = gain * U(-1, 1) * sqrt(6 / (fan_in + fan_out)); fans count the 3x3 window.
  w = unet_layers.xavier_init(1e-5)(jax.random.key(0), (3, 3, 64, 128))
  limit = 1e-5 * np.sqrt(6.0 / (9 * 64 + 9 * 128))
  assert float(jnp.max(jnp.abs(w))) <= limit
  np.testing.assert_allclose(float(jnp.std(w)), limit / np.sqrt(3.0), rtol=0.02)
  assert not bool(jnp.any(unet_layers.xavier_init(0.0)(jax.random.key(0), (3, 3, 4, 4))))


def test_zero_network_output_gives_c_skip_x():
  x, c = _inputs((8, 8, 3))
  sigma = jnp.exp(4.0 * c)  # c_noise = ln(sigma) / 4
  c_skip = (0.25 / (sigma**2 + 0.25))[:, None, None, None]  # EDM c_skip, sigma_data 0.5
  d = edm.denoise(lambda x_in, c_noise: jnp.zeros_like(x_in), x, sigma, 0.5)
  np.testing.assert_allclose(d, c_skip * x, rtol=1e-6)
  # EDM's init (gain 1e-5 on the last layer of every branch) gives F near zero, not zero.
  mlp = MLPDenoiser(hidden_dims=(32, 32))
  f = _apply(mlp, _init(mlp, x, c), x, c)
  assert 0.0 < float(jnp.max(jnp.abs(f))) < 1e-3
  # Gain 0: the output layer starts at exactly zero, so D(x; sigma) = c_skip x.
  unet = make_model(_tiny_unet_config("ddpmpp"), (8, 8, 3))
  for module, out_path in ((unet, ("dec", "8x8_aux_conv")), (mlp, ("out",))):
    variables = _init(module.clone(zero_init_scale=0.0), x, c)
    out_layer = functools.reduce(lambda t, k: t[k], out_path, variables["params"])
    assert not any(bool(jnp.any(v)) for v in jax.tree.leaves(out_layer))
    net_fn = functools.partial(_apply, module, variables)
    np.testing.assert_array_equal(edm.denoise(net_fn, x, sigma, 0.5), c_skip * x)


@pytest.mark.parametrize("name", ["unet", "mlp"])
def test_bfloat16_compute_close_to_float32(name):
  x, c = _inputs((8, 8, 3))
  if name == "unet":
    f32 = make_model(_tiny_unet_config("ncsnpp"), (8, 8, 3))
  else:
    f32 = MLPDenoiser(hidden_dims=(64, 64))
  bf16 = f32.clone(dtype=jnp.bfloat16)
  variables = _golden_params(f32, x, c)  # O(1) outputs, unlike the near-zero init
  shapes = jax.eval_shape(lambda: bf16.init({"params": jax.random.key(0)}, x, c))
  assert {v.dtype for v in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.float32)}
  y32, y16 = _apply(f32, variables, x, c), _apply(bf16, variables, x, c)
  assert y16.dtype == jnp.float32 and y16.shape == x.shape
  rel = float(jnp.linalg.norm(y16 - y32) / jnp.linalg.norm(y32))
  assert 1e-5 < rel < 5e-2  # bf16 really ran (not bit-equal) and stays close


@pytest.mark.parametrize("name", ["unet", "mlp"])
def test_dropout_only_in_training(name):
  x, c = _inputs((8, 8, 3))
  if name == "unet":
    config = _tiny_unet_config("ddpmpp", dropout=0.5, channel_mult=(1,), attn_resolutions=())
    module = make_model(config, (8, 8, 3))
  else:
    module = MLPDenoiser(hidden_dims=(32, 32), dropout=0.5)
  variables = _golden_params(module, x, c)  # nonzero branches, so dropout reaches F

  def run(train, seed):
    return _apply(module, variables, x, c, train=train, rngs={"dropout": jax.random.key(seed)})

  eval_out = _apply(module, variables, x, c, train=False)  # no rng needed in eval mode
  np.testing.assert_array_equal(run(False, 1), eval_out)
  np.testing.assert_array_equal(run(False, 2), eval_out)
  np.testing.assert_array_equal(run(True, 1), run(True, 1))
  assert float(jnp.max(jnp.abs(run(True, 1) - run(True, 2)))) > 1e-3
  assert float(jnp.max(jnp.abs(run(True, 1) - eval_out))) > 1e-3


@pytest.mark.parametrize(
  "model, data_shape, key",
  [
    (dict(name="resnet"), (8, 8, 1), "model.name"),
    (dict(arch="adm"), (8, 8, 1), "model.arch"),
    (dict(dtype="float16"), (8, 8, 1), "model.dtype"),
    (dict(dropout=1.0), (8, 8, 1), "model.dropout"),
    (dict(embedding_type="sinusoid"), (8, 8, 1), "model.embedding_type"),
    (dict(encoder_type="skip"), (8, 8, 1), "model.encoder_type"),
    (dict(channel_mult=(1, 2, 2, 2, 2)), (8, 8, 1), "model.channel_mult"),  # 8 % 2**4
    (dict(channel_mult=(1, 2)), (7, 7, 1), "model.channel_mult"),
    (dict(attn_resolutions=(16,)), (8, 8, 1), "model.attn_resolutions"),
    (dict(model_channels=132), (8, 8, 1), "model.model_channels"),  # 132 % 32 groups
    (dict(num_blocks=0), (8, 8, 1), "model.num_blocks"),
    (dict(), (64,), "model.name"),  # a U-Net needs images
    (dict(channel_mult=(1, 2, 2)), (8, 6, 1), "model.channel_mult"),  # 6 % 2**2: either side
    (dict(name="mlp", hidden_dims=()), (2,), "model.hidden_dims"),
    (dict(name="mlp", dtype="half"), (2,), "model.dtype"),
  ],
)
def test_invalid_settings_raise_naming_the_key(model, data_shape, key):
  with pytest.raises(ValueError, match=key.replace(".", r"\.")):
    make_model(_config(**model), data_shape)


def test_a_unet_width_that_groups_do_not_split_names_widths_that_do():
  """The error named the channel count and groups but no fix; which widths work depends on
  channel_mult (decoder concatenations too)."""
  with pytest.raises(ValueError) as e:
    make_model(_config(model_channels=10, channel_mult=(1, 3)), (8, 8, 1))
  assert "model_channels=10: 30 channels" in str(e.value) and "7 GroupNorm groups" in str(e.value)
  assert str(e.value).endswith(
    "e.g. --config.model.model_channels=8 or --config.model.model_channels=12"
  )
  for width in (8, 12):
    make_model(_config(model_channels=width, channel_mult=(1, 3)), (8, 8, 1))


def test_a_unet_on_non_square_images_is_the_square_network_over_the_whole_width():
  """An 8 x 16 image runs through the parameters of the 8 x 8 network (convolutions, norms and
  attention over positions do not depend on the width), keeps its shape, and every column
  reaches the output (a change in the right half changes the output)."""
  config = _config(channel_mult=(1, 2), attn_resolutions=(4,))
  wide, square = make_model(config, (8, 16, 1)), make_model(config, (8, 8, 1))
  x = jax.random.normal(jax.random.key(1), (2, 8, 16, 1))
  c = jnp.array([0.5, -1.0])
  params = jax.jit(square.init)({"params": jax.random.key(0)}, x[:, :, :8], c)
  wide_shapes = jax.eval_shape(wide.init, {"params": jax.random.key(0)}, x, c)
  assert jax.tree.map(jnp.shape, wide_shapes) == jax.tree.map(jnp.shape, params)
  # off the zero-initialised output layers: noise drawn once for all parameters (a draw per
  # leaf compiles a random program per leaf shape, seconds on CPU)
  flat, unravel = jax.flatten_util.ravel_pytree(params)
  params = unravel(flat + 0.1 * jax.random.normal(jax.random.key(2), flat.shape))
  apply = jax.jit(wide.apply)
  out = apply(params, x, c)
  assert out.shape == x.shape and bool(jnp.all(jnp.isfinite(out)))
  changed = apply(params, x.at[:, :, 12:].add(1.0), c)
  assert float(jnp.max(jnp.abs(changed - out)[:, :, :4])) > 0  # attention: seen from the left


def test_arch_defaults_and_overrides():
  ddpmpp = make_model(_config(arch="ddpmpp"), (8, 8, 1))
  assert isinstance(ddpmpp, SongUNet) and ddpmpp.out_channels == 1
  assert (ddpmpp.embedding_type, ddpmpp.encoder_type) == ("positional", "standard")
  assert ddpmpp.resample_filter == (1, 1) and ddpmpp.channel_mult_noise == 1
  mixed = make_model(_config(arch="ddpmpp", embedding_type="fourier"), (8, 8, 1))
  assert mixed.embedding_type == "fourier" and mixed.channel_mult_noise == 2
  mlp = make_model(_config(name="mlp", hidden_dims=(8, 8), dtype="bfloat16"), (3,))
  assert isinstance(mlp, MLPDenoiser) and mlp.dtype == jnp.bfloat16


@pytest.mark.parametrize("channels", [8, 64, 96])
def test_group_norm_matches_flax_and_folds_the_shift(channels):
  """Per-channel-statistics GroupNorm == flax.linen.GroupNorm(x + shift), EDM groups/eps."""
  kx, ks, kp = jax.random.split(jax.random.key(3), 3)
  x = 3.0 + 2.0 * jax.random.normal(kx, (4, 5, 6, channels))
  shift = jax.random.normal(ks, (4, channels))
  ours = unet_layers.GroupNorm(epsilon=1e-6)
  ref = flax.linen.GroupNorm(num_groups=unet_layers.num_groups(channels), epsilon=1e-6)
  params = ref.init(kp, x)
  params = jax.tree.map(lambda p: p + jax.random.normal(kp, p.shape), params)  # not 1 / 0
  # jitted: op by op, every primitive of each channel count is its own compile
  want = jax.jit(lambda x, s: ref.apply(params, x + s[:, None, None, :]))(x, shift)
  got = jax.jit(ours.apply)(params, x, shift)
  np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)
  np.testing.assert_allclose(
    jax.jit(ours.apply)(params, x), jax.jit(ref.apply)(params, x), atol=2e-5, rtol=0
  )
  # Gradients through the folded shift equal those through the materialised sum.
  loss = lambda f: lambda x, s: jnp.sum(jnp.sin(f(x, s)))
  g_ours = jax.jit(jax.grad(loss(lambda x, s: ours.apply(params, x, s)), argnums=(0, 1)))(x, shift)
  g_ref = jax.jit(jax.grad(loss(lambda x, s: ref.apply(params, x + s[:, None, None, :])), (0, 1)))(
    x, shift
  )
  for a, b in zip(g_ours, g_ref, strict=True):
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("rate", [0.13, 0.5])
def test_dropout_rate_and_scale(rate):
  """Drop fraction within 5 sigma of the rate; kept values are x / (1 - rate), mean kept."""
  x = jnp.full((8, 16, 16, 64), 2.0, jnp.float32)
  y = unet_layers.dropout(x, rate, jax.random.key(0))
  n = x.size
  dropped = float(jnp.mean(y == 0))
  assert abs(dropped - rate) < 5 * np.sqrt(rate * (1 - rate) / n)
  kept = np.unique(np.asarray(y[y != 0]))
  np.testing.assert_allclose(kept, [2.0 / (1 - rate)], rtol=1e-4)
  # Both 16-bit halves of each word are used: neighbouring channels (one word) differ.
  assert float(jnp.mean((y[..., 0::2] == 0) == (y[..., 1::2] == 0))) < 0.9
  # Different keys give different masks; the same key the same mask.
  np.testing.assert_array_equal(y, unet_layers.dropout(x, rate, jax.random.key(0)))
  assert bool(jnp.any(y != unet_layers.dropout(x, rate, jax.random.key(1))))
  with pytest.raises(ValueError, match="even channel count"):
    unet_layers.dropout(jnp.ones((2, 3)), rate, jax.random.key(0))


@pytest.mark.parametrize("k, pad", [(3, 1), (1, 0), (3, 2), (1, 1)])
def test_taps_weight_gradient_equals_the_convolutions(k, pad):
  """conv2d_taps: same output and same gradients (input and weights) as the plain
  convolution, for one run and vmapped over a run axis (its reason to exist)."""
  kx, kw, kd = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, (3, 2, 7, 6, 4))  # runs, batch, H, W, C
  w = jax.random.normal(kw, (3, k, k, 4, 5))
  h = 7 + 2 * pad - k + 1
  dy = jax.random.normal(kd, (3, 2, h, 6 + 2 * pad - k + 1, 5))

  def grads(conv):
    def one(x, w, dy):
      y, vjp = jax.vjp(lambda x, w: conv(x, w, pad), x, w)
      return (y, *vjp(dy))

    return one(x[0], w[0], dy[0]), jax.jit(jax.vmap(one))(x, w, dy)

  taps, plain = grads(unet_layers.conv2d_taps), grads(unet_layers.conv2d)
  for got, want in zip(taps, plain, strict=True):
    for a, b in zip(got, want, strict=True):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
  assert jnp.abs(want[2]).max() > 0.1  # the weight gradient is not trivially zero


def test_tap_weight_gradients_switch_what_every_conv2d_uses(monkeypatch):
  """Inside tap_weight_gradients() the U-Net's convolutions go through conv2d_taps (counted),
  with the same loss gradient as the plain convolution; after the block, back to the plain one
  (also when the block raises)."""
  calls = []
  real = unet_layers.conv2d_taps
  monkeypatch.setattr(unet_layers, "conv2d_taps", lambda *a: calls.append(1) or real(*a))
  layer = unet_layers.Conv2D(features=5, kernel=3)
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
  params = layer.init(jax.random.key(2), x)

  def grad():
    return jax.grad(lambda p: jnp.sum(layer.apply(p, x) ** 2))(params)

  plain = grad()
  with pytest.raises(KeyError), unet_layers.tap_weight_gradients():
    taps = grad()
    assert calls, "Conv2D did not go through conv2d_taps"
    raise KeyError("leaves the block")
  n = len(calls)
  grad()
  assert len(calls) == n, "the plain convolution did not come back after the block"
  for a, b in zip(jax.tree.leaves(taps), jax.tree.leaves(plain), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def test_unet_shape_errors_name_a_fix_that_works():
  """A side the U-Net's levels do not divide, and attention at a resolution the image does not
  have: both fail before anything is built, and the override each message proposes builds."""
  import re

  from configs import default
  from infonoise_jax.models import make_model

  c = default.get_config("fashion")
  c.model.channel_mult, c.model.attn_resolutions = (1, 2, 2, 2), ()
  with pytest.raises(ValueError, match=r"image side 30 is not divisible") as e:
    make_model(c, (30, 30, 1))
  mult = re.search(r"channel_mult='(\([^']*\))'", str(e.value)).group(1)
  c.model.channel_mult = eval(mult)  # the proposed value: (1, 2), as 30 = 2 x 15
  make_model(c, (30, 30, 1))  # builds
  # No resize can help (data.image_size divides the side, and no divisor of 30 is a multiple
  # of 8): the message does not propose one.
  assert "image_size" not in str(e.value) and "crop / pad the images" in str(e.value)
  c.model.channel_mult, c.model.attn_resolutions = (1, 2, 2), (4,)
  with pytest.raises(ValueError, match=r"not among this image's U-Net resolutions") as e:
    make_model(c, (20, 20, 3))
  attn = re.search(r"attn_resolutions='(\([^']*\))'", str(e.value)).group(1)
  c.model.attn_resolutions = eval(attn)
  make_model(c, (20, 20, 3))  # builds


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_remat_norm_gives_the_same_values_and_stores_less(dtype):
  """model.remat_norm recomputes GroupNorm + SiLU (+ dropout) in the backward pass: the loss
  and every gradient equal the stored version's (same dropout masks), and the residuals the
  backward pass keeps (jax.vjp's closure) take fewer bytes."""
  dt = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 16, 16, 3))
  c = jax.random.normal(jax.random.PRNGKey(2), (4,))
  rngs = {"dropout": jax.random.PRNGKey(7)}
  results = []
  for remat in (False, True):
    net = SongUNet(
      out_channels=3, model_channels=16, channel_mult=(1, 2), num_blocks=1,
      attn_resolutions=(8,), dropout=0.2, remat_norm=remat, dtype=dt,
    )  # fmt: skip
    v = net.init(jax.random.PRNGKey(1), x, c)
    v = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.PRNGKey(3), a.shape), v)
    loss, vjp = jax.vjp(
      lambda v, net=net: jnp.sum(jnp.square(net.apply(v, x, c, True, rngs=rngs))), v
    )
    stored = sum(leaf.nbytes for leaf in jax.tree.leaves(vjp))
    results.append((loss, vjp(jnp.ones(()))[0], stored))
  (loss0, g0, stored0), (loss1, g1, stored1) = results
  np.testing.assert_allclose(loss1, loss0, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()) + 1e-6)
  assert stored1 < 0.6 * stored0, (stored1, stored0)
