"""Diagnostic images as uint8 numpy arrays, ready for a MetricWriter or a PNG file.

* `image_grid`: a batch of samples tiled into one RGB image.
* `schedule_plot`: densities over ln(sigma) (docs/method.md 2-4): the InfoNoise profile
  rho (4-5), the sampling density pi (6) and the effective allocation phi = pi w (2), each
  normalized to unit area on the grid so their shapes can be compared.

Plots use matplotlib's object API on an Agg canvas (headless, no pyplot global state),
imported lazily so the rest of the package does not need it.
"""

import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
from etils import epath
from PIL import Image

from infonoise_jax.evaluation.images import to_uint8

PLOT_SIZE_PX = (640, 400)  # (width, height): readable in TensorBoard's image card


def image_grid(
  images_NHWC: np.ndarray,
  ncols: int,
  *,
  padding: int = 1,
  pad_value: int = 0,
  value_range: tuple[float, float] = (-1.0, 1.0),
) -> np.ndarray:
  """Tiles N images row-major into an (H', W', 3) uint8 grid.

  Image i sits at row i // ncols, column i % ncols, its top-left pixel at
  (padding + row (H + padding), padding + col (W + padding)); unused cells and the
  padding hold `pad_value`. Floats are mapped from `value_range`; 1-channel images are
  repeated to RGB, an alpha channel is dropped.
  """
  x_NHWC = to_uint8(images_NHWC, value_range)
  if x_NHWC.ndim == 3:
    x_NHWC = x_NHWC[..., None]
  n, h, w, c = x_NHWC.shape
  x_NHWC = np.repeat(x_NHWC, 3, axis=-1) if c == 1 else x_NHWC[..., :3]
  ncols = max(1, min(ncols, n))
  nrows = -(-n // ncols)
  grid = np.full(
    (nrows * (h + padding) + padding, ncols * (w + padding) + padding, 3), pad_value, np.uint8
  )
  for i in range(n):
    top = padding + (i // ncols) * (h + padding)
    left = padding + (i % ncols) * (w + padding)
    grid[top : top + h, left : left + w] = x_NHWC[i]
  return grid


def sample_grid(
  images_NHWC: np.ndarray, value_range: tuple[float, float] = (-1.0, 1.0), min_side: int = 32
) -> np.ndarray:
  """A near-square grid of samples; images smaller than `min_side` are upscaled (nearest) by
  an integer factor so that tiny ones (8x8 digits) get visible pixels."""
  up = max(1, min_side // images_NHWC.shape[1])
  big = np.asarray(images_NHWC).repeat(up, axis=1).repeat(up, axis=2)
  return image_grid(big, math.ceil(math.sqrt(len(big))), value_range=value_range)


def save_png(path: str | epath.PathLike, image: np.ndarray) -> None:
  """Writes an (H, W[, 1|3|4]) image as PNG (local or cloud path); floats map from [-1, 1]."""
  image = np.asarray(image)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  buf = io.BytesIO()
  Image.fromarray(to_uint8(image)).save(buf, format="PNG")
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(buf.getvalue())


def normalize_on_grid(log_sigma_G: np.ndarray, values_G: np.ndarray) -> np.ndarray:
  """values / (trapezoid integral over ln sigma), so the curve has unit area on the grid.

  Non-finite or negative values are treated as 0; an all-zero curve is returned as zeros.
  """
  x_G = np.asarray(log_sigma_G, np.float64)
  v_G = np.asarray(values_G, np.float64)
  v_G = np.where(np.isfinite(v_G) & (v_G > 0), v_G, 0.0)
  area = float(np.sum(0.5 * (v_G[1:] + v_G[:-1]) * np.diff(x_G)))
  return v_G / area if area > 0 else v_G


def schedule_plot(
  log_sigma_G: np.ndarray,
  curves: Mapping[str, np.ndarray],
  title: str = "",
  *,
  markers: Mapping[str, float] | None = None,
  normalize: bool = True,
  size_px: Sequence[int] = PLOT_SIZE_PX,
) -> np.ndarray:
  """Line plot of `curves[name]` (values on the grid `log_sigma_G`) against ln sigma.

  Typical curves: "InfoNoise profile rho", "sampling density pi", "effective allocation
  pi*w". With `normalize`, each is divided by its area on the grid (`normalize_on_grid`).
  `markers[name] = ln sigma` draws a labelled vertical line (e.g. the gate pivot ln c, or
  ln sigma_data). Returns an (H, W, 3) uint8 image of `size_px` = (width, height).
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  dpi = 100
  width, height = size_px
  fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
  canvas = FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  x_G = np.asarray(log_sigma_G, np.float64)
  for name, values_G in curves.items():
    y_G = normalize_on_grid(x_G, values_G) if normalize else np.asarray(values_G, np.float64)
    ax.plot(x_G, y_G, label=name, linewidth=1.8)
  for i, (name, position) in enumerate((markers or {}).items()):
    ax.axvline(position, color=f"C{len(curves) + i}", linestyle="--", linewidth=1.0, label=name)
  ax.set_xlabel("ln σ")
  ax.set_ylabel("density per unit ln σ" if normalize else "value")
  ax.set_xlim(float(x_G[0]), float(x_G[-1]))
  if normalize:
    ax.set_ylim(bottom=0.0)
  ax.grid(alpha=0.3)
  if curves or markers:
    ax.legend(loc="upper right", fontsize="small")
  if title:
    ax.set_title(title)
  fig.tight_layout()
  canvas.draw()
  return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _figure(size_px: Sequence[int]):
  """(figure, canvas, axes) on an Agg canvas of `size_px` = (width, height) pixels."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  dpi = 100
  fig = Figure(figsize=(size_px[0] / dpi, size_px[1] / dpi), dpi=dpi)
  return fig, FigureCanvasAgg(fig), fig.add_subplot()


def _render(fig, canvas) -> np.ndarray:
  fig.tight_layout()
  canvas.draw()
  return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def loss_by_noise_plot(
  edges_E: np.ndarray, loss_P: np.ndarray, title: str = "", size_px: Sequence[int] = PLOT_SIZE_PX
) -> np.ndarray:
  """Per-noise-bin mean loss against ln sigma, one point per bin (empty bins, NaN, omitted)."""
  fig, canvas, ax = _figure(size_px)
  centres_P = 0.5 * (np.asarray(edges_E[1:]) + np.asarray(edges_E[:-1]))
  loss_P = np.asarray(loss_P, np.float64)
  ok = np.isfinite(loss_P)
  ax.plot(centres_P[ok], loss_P[ok], marker="o", markersize=3, linewidth=1.5)
  ax.set_xlabel("ln σ")
  ax.set_ylabel("mean weighted loss in bin")
  ax.set_xlim(float(edges_E[0]), float(edges_E[-1]))
  ax.grid(alpha=0.3)
  if title:
    ax.set_title(title)
  return _render(fig, canvas)


def heatmap_plot(
  log_sigma_G: np.ndarray,
  steps_T: Sequence[int],
  values_TG: np.ndarray,
  title: str = "",
  size_px: Sequence[int] = PLOT_SIZE_PX,
) -> np.ndarray:
  """Rows of `values_TG` (one per training step in `steps_T`, each normalized to unit area
  on the ln-sigma grid) as a heatmap: ln sigma across, training step down."""
  fig, canvas, ax = _figure(size_px)
  x_G = np.asarray(log_sigma_G, np.float64)
  rows_TG = np.stack([normalize_on_grid(x_G, v) for v in np.asarray(values_TG)])
  steps_T = np.asarray(steps_T, np.float64)
  # Row t covers the steps between its neighbours' midpoints.
  half = np.diff(steps_T) / 2 if len(steps_T) > 1 else np.array([0.5])
  y_edges = np.concatenate([[steps_T[0] - half[0]], steps_T[:-1] + half, [steps_T[-1] + half[-1]]])
  x_edges = np.concatenate([[x_G[0]], 0.5 * (x_G[1:] + x_G[:-1]), [x_G[-1]]])
  mesh = ax.pcolormesh(x_edges, y_edges, rows_TG, shading="flat", cmap="viridis")
  fig.colorbar(mesh, ax=ax, label="density per unit ln σ")
  ax.set_xlabel("ln σ")
  ax.set_ylabel("training step")
  ax.invert_yaxis()
  if title:
    ax.set_title(title)
  return _render(fig, canvas)


def scatter_plot(
  points_N2: np.ndarray,
  reference_M2: np.ndarray | None = None,
  title: str = "",
  size_px: Sequence[int] = (480, 480),
) -> np.ndarray:
  """2-D samples as a scatter plot, over the training data (grey) when given."""
  fig, canvas, ax = _figure(size_px)
  if reference_M2 is not None:
    ref = np.asarray(reference_M2)
    ax.scatter(ref[:, 0], ref[:, 1], s=2, color="0.75", label="data")
  pts = np.asarray(points_N2)
  ax.scatter(pts[:, 0], pts[:, 1], s=4, color="C0", label="samples")
  ax.set_aspect("equal", adjustable="datalim")
  ax.grid(alpha=0.3)
  ax.legend(loc="upper right", fontsize="small")
  if title:
    ax.set_title(title)
  return _render(fig, canvas)
