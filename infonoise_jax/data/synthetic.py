"""Synthetic data with known structure: a Gaussian mixture with exact posteriors, 2-D toys.

The Gaussian mixture is the closed-form check of docs/method.md section 3: for
x_sigma = x_0 + sigma eps with x_0 ~ sum_k w_k N(mu_k, s^2 I), the posterior mean
E[x_0 | x_sigma] is a softmax-weighted average of per-component Wiener estimates, so the
Bayes mmse is an exact expectation of a known function (`GaussianMixture.posterior_mean`).
"""

import dataclasses

import numpy as np

TOY2D_KINDS = ("checkerboard", "ring", "moons")
_MEANS_SEED = 12345  # the mixture is fixed; a split's seed only changes which points are drawn


@dataclasses.dataclass(frozen=True, eq=False)
class GaussianMixture:
  """Equal-weight mixture of isotropic Gaussians N(mu_k, std^2 I) in D dimensions."""

  means_KD: np.ndarray
  std: float
  weights_K: np.ndarray

  @classmethod
  def make(
    cls, num_components: int, dim: int, scale: float, component_std: float
  ) -> "GaussianMixture":
    """Means ~ N(0, (scale/2)^2 I) from a fixed seed; std = component_std * scale."""
    if num_components < 1 or dim < 1 or component_std <= 0:
      raise ValueError(
        "gaussian_mixture needs data.num_components >= 1, data.dim >= 1 and "
        f"data.component_std > 0; got {num_components}, {dim}, {component_std}"
      )
    rng = np.random.default_rng(_MEANS_SEED)
    means_KD = 0.5 * scale * rng.standard_normal((num_components, dim))
    weights_K = np.full((num_components,), 1.0 / num_components)
    return cls(means_KD, float(component_std * scale), weights_K)

  def draw(self, num_examples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(x_ND float32, component_N int32): a fixed sample of `num_examples` points."""
    rng = np.random.default_rng(seed)
    k_N = rng.choice(len(self.weights_K), size=num_examples, p=self.weights_K)
    eps_ND = rng.standard_normal((num_examples, self.means_KD.shape[1]))
    x_ND = self.means_KD[k_N] + self.std * eps_ND
    return x_ND.astype(np.float32), k_N.astype(np.int32)

  def posterior_mean(self, x_BD: np.ndarray, sigma_B: np.ndarray) -> np.ndarray:
    """E[x_0 | x_sigma = x] (float64), the Bayes-optimal denoiser for this prior."""
    x_BD = np.asarray(x_BD, np.float64)
    var_B1 = self.std**2 + np.asarray(sigma_B, np.float64).reshape(-1, 1) ** 2
    d2_BK = np.sum((x_BD[:, None, :] - self.means_KD[None]) ** 2, axis=-1)
    # Responsibilities: x_sigma | k ~ N(mu_k, (s^2 + sigma^2) I).
    logit_BK = np.log(self.weights_K) - 0.5 * d2_BK / var_B1
    r_BK = np.exp(logit_BK - logit_BK.max(axis=1, keepdims=True))
    r_BK /= r_BK.sum(axis=1, keepdims=True)
    # Per component: E[x_0 | x, k] = mu_k + s^2 / (s^2 + sigma^2) (x - mu_k).
    gain_B1 = self.std**2 / var_B1
    mean_B = r_BK @ self.means_KD
    return mean_B + gain_B1 * (x_BD - mean_B)


def toy2d(kind: str, num_examples: int, seed: int) -> np.ndarray:
  """(N, 2) float32 points in [-1, 1]^2: checkerboard, ring or two moons."""
  rng = np.random.default_rng(seed)
  n = num_examples
  if kind == "checkerboard":  # uniform on the 8 cells (i + j even) of a 4x4 board
    cell_N = rng.integers(0, 8, n)
    row_N = cell_N // 2
    col_N = 2 * (cell_N % 2) + row_N % 2
    u_N2 = rng.uniform(0.0, 1.0, (n, 2))
    x_N2 = -1.0 + 0.5 * np.stack([col_N + u_N2[:, 0], row_N + u_N2[:, 1]], axis=1)
  elif kind == "ring":  # radius 0.8 with radial noise 0.05
    theta_N = rng.uniform(0.0, 2 * np.pi, n)
    r_N = 0.8 + 0.05 * rng.standard_normal(n)
    x_N2 = r_N[:, None] * np.stack([np.cos(theta_N), np.sin(theta_N)], axis=1)
  elif kind == "moons":  # two interleaved half circles, noise 0.05, centred and shrunk
    t_N = rng.uniform(0.0, np.pi, n)
    upper_N = rng.integers(0, 2, n).astype(bool)
    x = np.where(upper_N, np.cos(t_N), 1.0 - np.cos(t_N))
    y = np.where(upper_N, np.sin(t_N), 0.5 - np.sin(t_N))
    x_N2 = (np.stack([x - 0.5, y - 0.25], axis=1) + 0.05 * rng.standard_normal((n, 2))) / 1.6
  else:
    raise ValueError(f"toy2d kind must be one of {TOY2D_KINDS}, got {kind!r}")
  return np.clip(x_N2, -1.0, 1.0).astype(np.float32)
