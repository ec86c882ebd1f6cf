"""EDM diffusion math (Karras et al. 2022) as small pure functions.

docs/method.md section 2: variance-exploding forward process x_sigma = x_0 + sigma*eps,
preconditioned denoiser D(x; sigma) = c_skip x + c_out F(c_in x; c_noise) and the
loss weight w(sigma) = (sigma^2 + sd^2) / (sigma sd)^2.
"""

from collections.abc import Callable

import jax.numpy as jnp

Array = jnp.ndarray


def preconditioning(sigma: Array, sigma_data: float) -> tuple[Array, Array, Array, Array]:
  """Returns (c_skip, c_out, c_in, c_noise) for noise level `sigma` (EDM Table 1)."""
  sd2 = sigma_data**2
  s2 = sigma**2
  c_skip = sd2 / (s2 + sd2)
  c_out = sigma * sigma_data / jnp.sqrt(s2 + sd2)
  c_in = 1.0 / jnp.sqrt(s2 + sd2)
  c_noise = jnp.log(sigma) / 4.0
  return c_skip, c_out, c_in, c_noise


def loss_weight(sigma: Array, sigma_data: float) -> Array:
  """w(sigma) = (sigma^2 + sd^2) / (sigma sd)^2: makes the F-space target unit variance."""
  return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def _expand(v_B: Array, ndim: int) -> Array:
  return v_B.reshape(v_B.shape + (1,) * (ndim - v_B.ndim))


def denoise(
  net_fn: Callable[[Array, Array], Array], x_B: Array, sigma_B: Array, sigma_data: float
) -> Array:
  """D(x; sigma) with EDM preconditioning; `net_fn(c_in x, c_noise) -> F` is the raw network."""
  c_skip, c_out, c_in, c_noise = preconditioning(sigma_B, sigma_data)
  f_B = net_fn(_expand(c_in, x_B.ndim) * x_B, c_noise)
  return _expand(c_skip, x_B.ndim) * x_B + _expand(c_out, x_B.ndim) * f_B.astype(x_B.dtype)


def add_noise(x0_B: Array, sigma_B: Array, eps_B: Array) -> Array:
  """Forward process x_sigma = x_0 + sigma eps."""
  return x0_B + _expand(sigma_B, x0_B.ndim) * eps_B


def per_example_error(denoised_B: Array, x0_B: Array) -> Array:
  """Unweighted x-space error ||D - x_0||^2, averaged over data dimensions (docs/method.md 4)."""
  axes = tuple(range(1, x0_B.ndim))
  return jnp.mean(jnp.square(denoised_B.astype(jnp.float32) - x0_B.astype(jnp.float32)), axes)
