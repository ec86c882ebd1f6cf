"""Tests for infonoise_jax.evaluation.plots."""

import numpy as np
from PIL import Image

from infonoise_jax.evaluation import images, plots

BLUE, ORANGE, GREEN = (31, 119, 180), (255, 127, 14), (44, 160, 44)  # matplotlib C0, C1, C2


def test_to_uint8_maps_value_range_and_passes_uint8():
  np.testing.assert_array_equal(
    images.to_uint8(np.array([-1.0, 0.0, 1.0, 3.0])), [0, 128, 255, 255]
  )
  np.testing.assert_array_equal(images.to_uint8(np.array([0.0, 0.5]), (0.0, 1.0)), [0, 128])
  u = np.array([3, 200], np.uint8)
  assert images.to_uint8(u) is u


def test_image_grid_places_each_image_row_major():
  rng = np.random.default_rng(0)
  images = rng.integers(1, 256, (5, 2, 3, 3), dtype=np.uint8)  # 5 images, 2x3 pixels
  grid = plots.image_grid(images, ncols=3, padding=1, pad_value=0)
  # 2 rows x 3 cols of 2x3 tiles with 1-pixel borders: (2*3+1) x (3*4+1)
  assert grid.shape == (7, 13, 3) and grid.dtype == np.uint8
  covered = np.zeros(grid.shape[:2], bool)
  for i, (row, col) in enumerate([(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]):
    top, left = 1 + 3 * row, 1 + 4 * col
    np.testing.assert_array_equal(grid[top : top + 2, left : left + 3], images[i])
    covered[top : top + 2, left : left + 3] = True
  assert np.all(grid[~covered] == 0)  # borders and the empty 6th cell


def test_image_grid_gray_floats_and_no_padding():
  images = np.stack([np.full((2, 2, 1), -1.0), np.full((2, 2, 1), 1.0)])
  grid = plots.image_grid(images, ncols=4, padding=0)
  assert grid.shape == (2, 4, 3)  # ncols capped at N
  np.testing.assert_array_equal(grid[:, :2], 0)
  np.testing.assert_array_equal(grid[:, 2:], 255)


def test_save_png_round_trip(tmp_path):
  image = np.random.default_rng(1).integers(0, 256, (4, 5, 3), dtype=np.uint8)
  path = tmp_path / "sub" / "grid.png"
  plots.save_png(path, image)
  np.testing.assert_array_equal(np.asarray(Image.open(path)), image)


def test_normalize_on_grid_matches_gaussian_density():
  x_G = np.linspace(-8.0, 8.0, 801)
  y_G = plots.normalize_on_grid(x_G, 7.0 * np.exp(-0.5 * x_G**2))
  np.testing.assert_allclose(y_G, np.exp(-0.5 * x_G**2) / np.sqrt(2 * np.pi), atol=1e-6)
  np.testing.assert_array_equal(plots.normalize_on_grid(x_G, np.zeros_like(x_G)), 0.0)
  assert np.all(np.isfinite(plots.normalize_on_grid(x_G, np.full_like(x_G, np.nan))))


def _pixels_of(image, rgb, tol=30):
  return np.all(np.abs(image.astype(int) - np.array(rgb)) < tol, axis=-1)


def test_schedule_plot_draws_every_curve():
  x_G = np.linspace(np.log(0.002), np.log(80.0), 128)
  curves = {
    "InfoNoise profile": np.exp(-((x_G + 1.0) ** 2)),
    "sampling density pi": np.exp(-(x_G**2) / 4),
    "effective allocation pi*w": np.exp(-((x_G + 1.5) ** 2) / 2),
  }
  image = plots.schedule_plot(x_G, curves, "schedule at step 1000", markers={"ln c": np.log(0.2)})
  assert image.shape == (400, 640, 3) and image.dtype == np.uint8
  assert np.mean(np.all(image == 255, axis=-1)) > 0.5  # mostly white background
  for rgb in (BLUE, ORANGE, GREEN):
    assert _pixels_of(image, rgb).sum() > 200


def test_schedule_plot_x_axis_is_ln_sigma():
  size = (320, 200)
  x_G = np.linspace(-6.0, 4.0, 101)

  def peak_column(center):
    image = plots.schedule_plot(x_G, {"p": np.exp(-8 * (x_G - center) ** 2)}, size_px=size)
    assert image.shape == (size[1], size[0], 3)
    # the steep flanks of the narrow peak are the columns with the most blue pixels (the
    # zero baseline and the legend's line sample add about 2 per column)
    return np.argmax(_pixels_of(image, BLUE).sum(axis=0))

  left, right = peak_column(-4.0), peak_column(2.0)
  # peaks 6 ln-sigma units apart on a 10-unit axis: about 0.6 of the axes width apart
  assert 0.4 * size[0] < right - left < 0.65 * size[0]


def test_sample_grid_upscales_tiny_images_only():
  """8x8 images are repeated 4x to 32x32 (nearest); 32x32 ones are tiled as they are."""
  rng = np.random.default_rng(0)
  tiny = rng.uniform(-1, 1, (5, 8, 8, 1)).astype(np.float32)
  grid = plots.sample_grid(tiny)
  want = plots.image_grid(tiny.repeat(4, axis=1).repeat(4, axis=2), 3)  # ceil(sqrt(5)) = 3
  np.testing.assert_array_equal(grid, want)
  assert grid.shape == (2 * 33 + 1, 3 * 33 + 1, 3)
  big = rng.uniform(-2, 2, (4, 32, 32, 3)).astype(np.float32)
  np.testing.assert_array_equal(
    plots.sample_grid(big, value_range=(-2, 2)), plots.image_grid(big, 2, value_range=(-2, 2))
  )


def test_loss_plot_puts_points_where_the_bins_are():
  """Loss peaked in one bin: the plotted line's highest pixel lies above that bin's centre."""
  size = (320, 200)
  edges = np.linspace(-6.0, 4.0, 11)
  loss = np.ones(10)
  loss[7] = 5.0  # bin centre 1.5
  loss[0] = np.nan  # an empty bin is left out, not drawn at 0
  image = plots.loss_by_noise_plot(edges, loss, size_px=size)
  assert image.shape == (size[1], size[0], 3)
  rows, cols = np.nonzero(_pixels_of(image, BLUE))
  top_col = cols[np.argmin(rows)]
  left, right = cols.min(), cols.max()  # the drawn line spans centres -3.5 .. 3.5
  assert abs((top_col - left) / (right - left) - (1.5 + 3.5) / 7.0) < 0.05


def test_heatmap_rows_follow_training_steps():
  """A bump that moves right over training: its brightest column moves right row by row."""
  x_G = np.linspace(-6.0, 4.0, 64)
  rows = np.stack([np.exp(-4 * (x_G - c) ** 2) for c in (-4.0, -1.0, 2.0)])
  image = plots.heatmap_plot(x_G, [100, 200, 300], rows, size_px=(400, 300))
  assert image.shape == (300, 400, 3)
  # viridis' brightest colour is yellow: its centroid column per band of image rows
  yellow = (image[..., 0] > 200) & (image[..., 1] > 200) & (image[..., 2] < 100)
  r, c = np.nonzero(yellow)
  bands = np.array_split(np.unique(r), 3)  # top (step 100) to bottom (step 300)
  centroids = [c[np.isin(r, band)].mean() for band in bands]
  assert centroids[0] < centroids[1] < centroids[2]


def test_scatter_plot_draws_samples_and_data():
  rng = np.random.default_rng(0)
  image = plots.scatter_plot(rng.normal(size=(200, 2)), rng.normal(size=(500, 2)))
  assert image.shape == (480, 480, 3)
  assert _pixels_of(image, BLUE).sum() > 100
