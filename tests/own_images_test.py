"""data.name='images': a user's own images from a .npy / .npz array or a folder of files."""

import json
import os
import pathlib

import jax
import numpy as np
import pytest
from PIL import Image

from configs.default import get_config
from infonoise_jax import train
from infonoise_jax import workdir as workdir_lib
from infonoise_jax.data import load_source
from infonoise_jax.data.sources import own_images_source
from infonoise_jax.evaluation.model_fid import reference_name
from infonoise_jax.validation import load_config_file

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _config(path, **data):
  c = get_config()
  c.data.update({"name": "images", "path": str(path), **data})
  return c


def _pixels(n=12, size=8, channels=3, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, size, size, channels), np.uint8)


def _expected(u_NHWC, scale=1.0, top=255.0):
  """The module docstring's map, written out: [0, top] -> [-scale, scale]."""
  return ((u_NHWC.astype(np.float64) / top) * 2.0 - 1.0) * scale


def _write_folder(folder, u_NHWC, names=None):
  names = names or [f"{i:03d}.png" for i in range(len(u_NHWC))]
  for name, u in zip(names, u_NHWC, strict=True):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(u[..., 0] if u.shape[-1] == 1 else u).save(path)


def test_npy_npz_and_folder_give_the_pixels(tmp_path):
  u = _pixels()
  np.save(tmp_path / "x.npy", u)
  np.savez(tmp_path / "x.npz", labels=np.arange(len(u)), images=u)
  # Nested folders read in sorted path order: a/ before b/, files sorted inside each.
  names = [f"{'ab'[i // 6]}/{i:03d}.png" for i in range(len(u))]
  _write_folder(tmp_path / "folder", u, names)
  for path in ("x.npy", "x.npz", "folder"):
    src = load_source(_config(tmp_path / path, scale=0.5))
    assert src.is_image and src.shape == (8, 8, 3) and src.num_examples == len(u)
    np.testing.assert_allclose(src.array, _expected(u, 0.5), atol=1e-6)


def test_gray_arrays_and_image_size(tmp_path):
  u = _pixels(channels=1)
  np.save(tmp_path / "gray.npy", u[..., 0])  # (N, H, W): one channel
  src = load_source(_config(tmp_path / "gray.npy", image_size=4))
  want = _expected(u).reshape(len(u), 4, 2, 4, 2, 1).mean(axis=(2, 4))
  np.testing.assert_allclose(src.array, want, atol=1e-6)
  _write_folder(tmp_path / "folder", u)
  np.testing.assert_allclose(
    load_source(_config(tmp_path / "folder")).array, _expected(u), atol=1e-6
  )


def test_a_folder_with_one_colour_image_is_read_as_rgb(tmp_path):
  gray, colour = _pixels(4, channels=1), _pixels(2, seed=1)
  _write_folder(tmp_path, gray, [f"g{i}.png" for i in range(4)])
  _write_folder(tmp_path, colour, ["c0.png", "c1.png"])
  src = load_source(_config(tmp_path))
  assert src.shape == (8, 8, 3)
  want = np.concatenate([colour, np.repeat(gray, 3, axis=-1)])  # sorted: c0, c1, g0..g3
  np.testing.assert_allclose(src.array, _expected(want), atol=1e-6)


def test_other_pixel_types(tmp_path):
  u = _pixels(channels=1)
  for name, x, top in (
    ("ints.npy", u.astype(np.int64), 255.0),
    ("unit.npy", u.astype(np.float32) / 255.0, 255.0),
    ("bool.npy", u > 127, 1.0),
  ):
    np.save(tmp_path / name, x)
    src = load_source(_config(tmp_path / name))
    want = _expected(u, top=255.0) if top == 255.0 else _expected(x.astype(np.uint8), top=1.0)
    np.testing.assert_allclose(src.array, want, atol=1e-5)
  src = load_source(_config(tmp_path / "bool.npy", binarize=True, scale=0.5))
  assert set(np.unique(src.array)) == {-0.5, 0.5}


def test_non_square_images_and_their_box_average(tmp_path):
  u = _pixels(n=3, size=8)[:, :, :6]  # 8 x 6 RGB
  np.save(tmp_path / "x.npy", u)
  src = load_source(_config(tmp_path / "x.npy"))
  assert src.shape == (8, 6, 3)
  np.testing.assert_allclose(src.array, _expected(u), atol=1e-5)
  half = load_source(_config(tmp_path / "x.npy", image_size=4))  # 2 x 2 blocks: 4 x 3
  blocks = _expected(u).reshape(3, 4, 2, 3, 2, 3).mean(axis=(2, 4))
  assert half.shape == (4, 3, 3)
  np.testing.assert_allclose(half.array, blocks, atol=1e-5)


def test_a_unet_trains_on_non_square_images(tmp_path):
  np.save(tmp_path / "x.npy", _pixels(n=16, size=8)[:, :, :4])  # 8 x 4 RGB
  c = load_config_file(ROOT / "configs" / "test.py", "")
  c.data.update({"name": "images", "path": str(tmp_path / "x.npy")})
  c.model.update({"name": "unet", "model_channels": 8, "channel_mult": (1, 2), "num_blocks": 1})
  c.model.attn_resolutions = (4,)
  c.train.update({"num_steps": 2, "batch_size": 8, "checkpoint_every": 2, "num_samples": 4})
  state = train.train_and_evaluate(c, str(tmp_path / "run"))
  assert int(state.step) == 2
  with np.load(tmp_path / "run" / "samples.npz") as z:
    assert z["samples"].shape[1:] == (8, 4, 3) and np.all(np.isfinite(z["samples"]))


def test_integer_pixels_with_a_low_maximum_are_warned_about(tmp_path, caplog):
  # Integer pixels are read as 0..255: digits saved as ints 0..16 would fill [-1, -0.87].
  u = _pixels(channels=1)
  for name, x, warned in (
    ("low.npy", u // 16, True),  # 0..15
    ("full.npy", u, False),  # 0..255
    ("dark.npy", np.minimum(u, 200), False),  # a dark set that still reaches 200
  ):
    np.save(tmp_path / name, x)
    caplog.clear()
    with caplog.at_level("WARNING"):
      src = load_source(_config(tmp_path / name))
    np.testing.assert_allclose(src.array, _expected(x, top=255.0), atol=1e-5)  # still read
    said = [r.getMessage() for r in caplog.records if "integer pixels are read" in r.getMessage()]
    assert bool(said) == warned, (name, said)
    if warned:
      assert "fill only [-1, -0.882]" in said[0] and "x.astype(np.float32) / 15" in said[0]


def test_one_channel_first_image_is_read_as_gray_images_with_a_warning(tmp_path, caplog):
  """(3, H, W) is three grayscale images, or one RGB image stored channel-first: trained as
  the first without a word, while (H, W, 3) is refused."""
  u = _pixels(n=3, channels=1)[..., 0]
  np.save(tmp_path / "chw.npy", u)
  with caplog.at_level("WARNING"):
    src = load_source(_config(tmp_path / "chw.npy"))
  assert src.num_examples == 3 and src.shape == (8, 8, 1)
  said = [r.getMessage() for r in caplog.records if "channel-first" in r.getMessage()]
  assert len(said) == 1 and "np.transpose(x, (1, 2, 0))[None]" in said[0]
  np.save(tmp_path / "five.npy", _pixels(n=5, channels=1)[..., 0])  # five: clearly a stack
  caplog.clear()
  with caplog.at_level("WARNING"):
    load_source(_config(tmp_path / "five.npy"))
  assert not [r for r in caplog.records if "channel-first" in r.getMessage()]


def test_a_stack_of_images_stored_last_is_warned_about(tmp_path, caplog):
  """(H, W, N), as MATLAB and scipy.io.loadmat keep image stacks: (8, 8, 40) trained without a
  word as 8 images of 8x40."""
  np.save(tmp_path / "hwn.npy", np.moveaxis(_pixels(n=40, channels=1)[..., 0], 0, -1))
  with caplog.at_level("WARNING"):
    assert load_source(_config(tmp_path / "hwn.npy")).shape == (8, 40, 1)
  said = [r.getMessage() for r in caplog.records if "stacked last" in r.getMessage()]
  assert len(said) == 1 and "40 images of 8x8 stacked last (H, W, N)" in said[0]
  assert "np.moveaxis(x, -1, 0)" in said[0]
  np.save(tmp_path / "wide.npy", _pixels(n=5, size=8, channels=1)[:, :4, :, 0])  # (5, 4, 8)
  caplog.clear()
  with caplog.at_level("WARNING"):
    load_source(_config(tmp_path / "wide.npy"))
  assert not [r for r in caplog.records if "stacked last" in r.getMessage()]


def test_binarizing_data_that_never_crosses_the_threshold_is_refused(tmp_path, caplog):
  """data.binarize thresholds at half the pixel range: dark data (floats in [0, 0.4], ints up to
  100) became all -1, blank images that trained without a word."""
  u = _pixels(channels=1)
  for name, x in (("f_dark.npy", u / 255.0 * 0.4), ("dark.npy", u.astype(int) * 100 // 255)):
    np.save(tmp_path / name, x.astype(np.float32 if name.startswith("f") else np.uint8))
    with pytest.raises(ValueError, match="every pixel of the 12 images is below it"):
      load_source(_config(tmp_path / name, binarize=True))
    load_source(_config(tmp_path / name))  # the same data unbinarized still trains
  light = np.full_like(_pixels(channels=1, size=16), 200)
  light[0, 0, 0] = 10  # one dark pixel in 3,072: nearly blank, warned
  np.save(tmp_path / "light.npy", light)
  with caplog.at_level("WARNING"):
    src = load_source(_config(tmp_path / "light.npy", binarize=True))
  assert (src.array < 0).sum() == 1
  assert any("nearly blank" in r.getMessage() for r in caplog.records)


def _npy_bytes():
  """A real .npy file's bytes (header and pixels), to cut short."""
  import io

  buf = io.BytesIO()
  np.save(buf, _pixels())
  return buf.getvalue()


def _huge_npz(path):
  """An .npz whose header declares 10^9 RGB 64x64 images (a few bytes on disk)."""
  import io
  import zipfile

  header = io.BytesIO()
  np.lib.format.write_array_header_1_0(
    header, {"descr": "|u1", "fortran_order": False, "shape": (10**9, 64, 64, 3)}
  )
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("images.npy", header.getvalue())


@pytest.mark.parametrize(
  "make, message",
  [
    (lambda d: None, "does not exist"),
    (lambda d: np.save(d / "x.npy", _pixels()[:, :, :, 0].astype(np.float32)), "outside [0, 1]"),
    (lambda d: np.save(d / "x.npy", -_pixels().astype(np.int16)), "outside 0..255"),
    (lambda d: np.save(d / "x.npy", np.full((2, 4, 4), np.nan, np.float32)), "NaN"),
    (lambda d: np.save(d / "x.npy", _pixels().transpose(0, 3, 1, 2)), "channel-first"),
    (lambda d: np.save(d / "x.npy", _pixels()[0, 0]), "must be an array (N, H, W)"),
    (  # rows of flattened images (MNIST's 784 values, CIFAR-10's 3072 channel-first)
      lambda d: np.save(d / "x.npy", _pixels(channels=1).reshape(12, 64)),
      "got shape (12, 64); if it is one grayscale image of 12x64, save x[None] (one image is "
      "too few to learn from: give many); if rows of flattened images, save x.reshape(-1, 8, 8)",
    ),
    (  # one grayscale image without its N axis: not read as 16 images of 4x4
      lambda d: np.save(d / "x.npy", _pixels(1, 16, 1)[0, :, :, 0]),
      "got shape (16, 16); if it is one grayscale image of 16x16, save x[None]",
    ),
    (
      lambda d: np.save(d / "x.npy", _pixels().transpose(0, 3, 1, 2).reshape(12, 192)),
      "save x.reshape(-1, 3, 8, 8).transpose(0, 2, 3, 1) if they are RGB stored channel-first",
    ),
    (lambda d: np.save(d / "x.npy", _pixels(1, 8)[0]), "if it is one RGB image, save x[None]"),
    (  # one non-square RGB image (6x10) without its N axis: the same hint, not "not square"
      lambda d: np.save(d / "x.npy", _pixels(1, 10)[0, :6]),
      "reads as 6 grayscale images of 10x3; if it is one RGB image, save x[None]",
    ),
    (lambda d: np.savez(d / "x.npz", a=_pixels(), b=_pixels()), "none is named 'images'"),
    (lambda d: (d / "x.npy").write_bytes(b"torn"), "is not a .npy file (it lacks numpy's header"),
    (lambda d: (d / "x.npy").write_bytes(np.random.default_rng(0).bytes(200)), "not a .npy file"),
    (lambda d: (d / "x.npy").write_bytes(_npy_bytes()[:90]), "not a readable numpy array"),
    (lambda d: np.save(d / "x.npy", _pixels(channels=2)), "gray channel with x[..., :1]"),
    (lambda d: np.save(d / "x.npy", _pixels(channels=4)), "RGBA, drop the alpha with x[..., :3]"),
    (lambda d: np.save(d / "x.npy", _pixels(channels=6)), "keep one channel (x[..., :1]) or"),
    (lambda d: _huge_npz(d / "x.npz"), "need 45776.4 GiB as float32"),
    (lambda d: np.save(d / "x.npy", (_pixels() > 127).astype(np.uint8)), "save an array as bool"),
    (lambda d: np.save(d / "x.npy", (_pixels() > 127).astype(np.int64)), "as almost black"),
    (lambda d: np.save(d / "x.npy", 0 * _pixels()), "every pixel of the 12 images is 0: blank"),
    (lambda d: np.save(d / "x.npy", np.full((3, 8, 8), 0.5)), "is 0.5: blank images"),
  ],
)
def test_bad_arrays_are_named(tmp_path, make, message):
  make(tmp_path)
  with pytest.raises((ValueError, FileNotFoundError), match=None) as e:
    load_source(
      _config(tmp_path / "x.npy" if (tmp_path / "x.npy").exists() else tmp_path / "x.npz")
    )
  assert message in str(e.value)


@pytest.mark.parametrize(
  "x, message",
  [  # the usual causes of pixels outside 0..255 / [0, 1], each with its fix
    (_pixels(channels=1) / 127.5 - 1, "span [-1.0, 1.0], outside [0, 1]; if they are in [-1, 1], "
     "save (x + 1) / 2"),
    (_pixels(channels=1).astype(np.float32), "if 255 is white, save x / 255"),
    (_pixels(channels=1).astype(np.uint16) * 257, "if they are 16-bit, save x.astype(np.float32) "
     "/ 65535"),
    # a bicubic resize's overshoot; a float one ulp above 1 is printed as such, not as 1
    (np.float32([[[-0.02, 0.5], [0.3, 1.02]]]), "save np.clip(x, 0, 1)"),
    (np.float32([[[0.0, 0.5], [0.3, np.nextafter(np.float32(1), 2)]]]), "span [0.0, 1.0000001]"),
  ],
)  # fmt: skip
def test_pixels_out_of_range_are_told_the_fix_for_their_range(tmp_path, x, message):
  np.save(tmp_path / "x.npy", x)
  with pytest.raises(ValueError) as e:
    load_source(_config(tmp_path / "x.npy"))
  assert message in str(e.value)


@pytest.mark.parametrize("name", ["digits", "fashion_mnist_local", "toy2d"])
def test_a_data_path_that_the_source_would_not_read_is_refused(tmp_path, name):
  """data.path is read by own images and token data only: set with another source it would
  be silently ignored (the run would train on that source), so it is refused, naming the fix."""
  np.save(tmp_path / "x.npy", _pixels())
  c = _config(tmp_path / "x.npy", name=name)
  with pytest.raises(ValueError, match=r"does not read it.*--config\.data\.name=images"):
    load_source(c)


def test_bad_folders_and_settings_are_named(tmp_path):
  with pytest.raises(ValueError, match="holds no image files"):
    load_source(_config(tmp_path))
  _write_folder(tmp_path, _pixels(2))
  Image.fromarray(_pixels(1, 16)[0]).save(tmp_path / "big.png")
  with pytest.raises(ValueError, match="big.png is 16x16 .* resize the images") as e:
    load_source(_config(tmp_path))
  assert "data.image_size scales a folder whose images share one size" in str(e.value)
  (tmp_path / "big.png").write_bytes(b"not a png")
  with pytest.raises(ValueError, match="cannot read .*big.png as an image"):
    load_source(_config(tmp_path))
  (tmp_path / "big.png").write_bytes(png_bytes(_pixels(1)[0])[:60])  # header whole, pixels cut
  with pytest.raises(ValueError, match="cannot (read|decode) .*big.png"):
    load_source(_config(tmp_path))
  (tmp_path / "big.png").unlink()
  Image.fromarray(np.zeros((8, 8), np.uint16)).save(tmp_path / "deep.png")
  with pytest.raises(ValueError, match="deep.png has I.* pixels"):
    load_source(_config(tmp_path))
  with pytest.raises(ValueError, match="set --config.data.path"):
    load_source(_config(""))
  with pytest.raises(ValueError, match="one split, 'train'"):
    load_source(_config(tmp_path, split="test"))
  np.save(tmp_path / "x.npy", _pixels())
  with pytest.raises(ValueError, match="need .* GiB .* TFDS"):
    own_images_source(_config(tmp_path / "x.npy").data, max_bytes=1000)


def test_fid_reference_cache_is_named_by_the_images(tmp_path):
  """Two image sets under the same data.name must not share cached FID statistics."""
  np.save(tmp_path / "a.npy", _pixels())
  np.save(tmp_path / "b.npy", _pixels(seed=1))
  a, b = (reference_name(_config(tmp_path / f)) for f in ("a.npy", "b.npy"))
  assert a != b and a == reference_name(_config(tmp_path / "a.npy"))
  _write_folder(tmp_path / "f", _pixels(3))
  before = reference_name(_config(tmp_path / "f"))
  _write_folder(tmp_path / "f", _pixels(1, seed=2), ["zz.png"])  # one image more
  assert reference_name(_config(tmp_path / "f")) != before


def test_training_on_an_array_equals_training_on_its_files(tmp_path):
  """The whole run (validation, pipeline, step, checkpoint) on data.name='images': the same
  images as an array or as PNG files train to the same state."""
  u = _pixels(32, channels=1)
  np.save(tmp_path / "x.npy", u)
  _write_folder(tmp_path / "files", u)
  states = []
  for path in ("x.npy", "files"):
    c = load_config_file(ROOT / "configs" / "test.py")
    c.data.update({"name": "images", "path": str(tmp_path / path)})
    states.append(jax.device_get(train.train_and_evaluate(c, str(tmp_path / f"run_{path}"))))
    assert os.path.isdir(tmp_path / f"run_{path}" / "checkpoints")
  for x, y in zip(jax.tree.leaves(states[0]), jax.tree.leaves(states[1]), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _digits_as_unit_floats(path):
  """scikit-learn's digits (pixels 0..16) as floats in [0, 1]: k / 16 is exact in binary, so
  data.name='images' must rebuild the digits source bit for bit."""
  from sklearn.datasets import load_digits

  np.save(path, (load_digits().images / 16.0).astype(np.float32))


def test_digits_saved_as_an_array_is_the_digits_source(tmp_path):
  _digits_as_unit_floats(tmp_path / "digits.npy")
  mine = load_source(_config(tmp_path / "digits.npy", scale=0.7))
  digits = load_source(_config("", name="digits", scale=0.7))
  np.testing.assert_array_equal(mine.array, digits.array)


def test_diagnose_takes_overrides_for_a_dataset_alone(tmp_path, capsys):
  """`diagnose --config=... --set data.name=images --set data.path=...` profiles the user's
  images: on the digits saved as an array, the same profile as on the digits themselves."""
  from infonoise_jax import diagnose

  _digits_as_unit_floats(tmp_path / "digits.npy")
  common = ["--config=configs/default.py", "--num_heldout=64", "--num_points=128"]
  common += ["--grid_points=16", "--schedules=lognormal"]
  diagnose.main([*common, f"--out={tmp_path / 'a'}"])
  images = ["--set", "data.name=images", "--set", f"data.path={tmp_path / 'digits.npy'}"]
  diagnose.main([*common, *images, f"--out={tmp_path / 'b'}"])
  a, b = (np.load(tmp_path / f / "profile.npz") for f in "ab")
  np.testing.assert_array_equal(a["mmse"], b["mmse"])
  capsys.readouterr()
  for bad, message in (("data.nmae=images", "no such config key"), ("seed=x", "--set seed='x'")):
    with pytest.raises(SystemExit) as e:
      diagnose.main([*common, "--set", bad, f"--out={tmp_path / 'c'}"])
    assert e.value.code == 1
    assert message in capsys.readouterr().err


def png_bytes(u_HWC) -> bytes:
  import io

  out = io.BytesIO()
  Image.fromarray(u_HWC).save(out, format="PNG")
  return out.getvalue()


def test_linked_folders_are_read_once(tmp_path):
  u = _pixels(4)
  _write_folder(tmp_path / "real", u)
  root = tmp_path / "root"
  root.mkdir()
  (root / "linked").symlink_to(tmp_path / "real")
  (tmp_path / "real" / "loop").symlink_to(root)  # a link back up: read once, no endless walk
  src = load_source(_config(root))
  np.testing.assert_allclose(src.array, _expected(u), atol=1e-6)


def test_a_relative_data_path_is_saved_absolute_and_resumes_only_on_the_same_shape(
  tmp_path, monkeypatch, caplog
):
  """config.json keeps the data where the run found it (commands started elsewhere find it),
  and a resume on images of another shape is refused naming the shapes, before anything is
  written (data.path may change on a resume; its images must still fit the model)."""
  np.save(tmp_path / "x.npy", _pixels(32, channels=1))
  np.save(tmp_path / "small.npy", _pixels(32, 4, channels=1))
  monkeypatch.chdir(tmp_path)
  c = load_config_file(ROOT / "configs" / "test.py")
  c.data.update({"name": "images", "path": "x.npy"})
  c.train.num_steps = 4
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(c, workdir)
  saved = json.loads((tmp_path / "run" / "config.json").read_text())
  assert saved["data"]["path"] == str(tmp_path / "x.npy")
  before = sorted(os.listdir(workdir))
  c = load_config_file(ROOT / "configs" / "test.py")
  c.data.update({"name": "images", "path": str(tmp_path / "small.npy")})
  with pytest.raises(
    ValueError, match=r"shape \(4, 4, 1\), but the checkpoint was trained on \(8, 8, 1\)"
  ):
    train.train_and_evaluate(c, workdir)
  assert sorted(os.listdir(workdir)) == before
  c.data.update({"path": str(tmp_path / "x.npy"), "image_size": 4})  # a key, not the files
  with pytest.raises(ValueError, match=r"changed data.image_size: 0 -> 4"):
    train.train_and_evaluate(c, workdir)
  # other images of the same shape: accepted, and said as a warning (not only in the history)
  np.save(tmp_path / "other.npy", _pixels(32, seed=1, channels=1))
  c = load_config_file(ROOT / "configs" / "test.py")
  c.data.update({"name": "images", "path": str(tmp_path / "other.npy")})
  c.train.num_steps = 6
  with caplog.at_level("WARNING"):
    train.train_and_evaluate(c, workdir)
  assert "other.npy" in caplog.text and "the run continues on the data these name" in caplog.text


def test_palette_images_are_gray_when_their_palette_is(tmp_path):
  u = _pixels(3, channels=1)
  for i, x in enumerate(u):
    Image.fromarray(x[..., 0]).convert("P").save(tmp_path / f"{i}.png")  # a gray palette
  src = load_source(_config(tmp_path))
  assert src.shape == (8, 8, 1)
  np.testing.assert_allclose(src.array, _expected(u), atol=1e-6)
  Image.fromarray(_pixels(1)[0]).convert("P").save(tmp_path / "colour.png")
  assert load_source(_config(tmp_path)).shape == (8, 8, 3)


def test_transparent_images_are_refused_opaque_alpha_is_dropped(tmp_path):
  """Alpha is not modelled: an RGBA / LA image that is opaque everywhere reads as its colours
  (as the .npy hint x[..., :3] does), one with transparent pixels is refused, naming the file,
  since dropping alpha would show whatever colour lies under it."""
  u = _pixels(3)
  for i, x in enumerate(u):
    rgba = np.concatenate([x, np.full((8, 8, 1), 255, np.uint8)], -1)
    Image.fromarray(rgba, "RGBA").save(tmp_path / f"{i}.png")
  np.testing.assert_allclose(load_source(_config(tmp_path)).array, _expected(u), atol=1e-6)
  holes = np.concatenate([u[0], np.full((8, 8, 1), 255, np.uint8)], -1)
  holes[2, 3, 3] = 0  # one transparent pixel
  Image.fromarray(holes, "RGBA").save(tmp_path / "0.png")
  with pytest.raises(ValueError, match=r"0\.png has transparent pixels .*alpha_composite"):
    load_source(_config(tmp_path))
  gray = np.stack([u[1, ..., 0], np.where(np.arange(8) < 4, 255, 10)[None].repeat(8, 0)], -1)
  Image.fromarray(gray.astype(np.uint8), "LA").save(tmp_path / "0.png")
  with pytest.raises(ValueError, match=r"0\.png has transparent pixels"):
    load_source(_config(tmp_path))


def test_camera_photos_are_read_upright_and_stacks_refused(tmp_path):
  """A photo stored sideways with an EXIF orientation (6: turn 90 degrees clockwise to show)
  is read as a viewer shows it, so it matches the same picture saved upright; a file of
  several frames is refused (only its first would be read); '.NPY' is a .npy file."""
  upright = np.random.default_rng(3).integers(0, 256, (6, 4, 3), np.uint8)  # 6 high, 4 wide
  exif = Image.Exif()
  exif[0x0112] = 6
  Image.fromarray(np.rot90(upright, k=1)).save(tmp_path / "a.png", exif=exif)  # stored 4x6
  Image.fromarray(upright).save(tmp_path / "b.png")
  got = load_source(_config(tmp_path)).array
  expected = _expected(np.stack([upright, upright]))
  np.testing.assert_allclose(got, expected, atol=1e-6)
  frames = [Image.fromarray(u) for u in _pixels(2, 6)]
  frames[0].save(tmp_path / "c.gif", save_all=True, append_images=frames[1:])
  with pytest.raises(ValueError, match="c.gif holds 2 frames"):
    load_source(_config(tmp_path))
  with open(tmp_path / "x.NPY", "wb") as f:
    np.save(f, _pixels())
  got = load_source(_config(tmp_path / "x.NPY")).array
  np.testing.assert_allclose(got, _expected(_pixels()), atol=1e-6)


def test_a_workdir_inside_the_data_folder_is_refused_before_anything_is_written(tmp_path):
  """The run's own sample grid was read back as training data on resume, and the error blamed
  the images' sizes."""
  _write_folder(tmp_path / "imgs", _pixels(n=4))
  config = _config(tmp_path / "imgs")
  for workdir in (tmp_path / "imgs" / "run", tmp_path / "imgs"):
    with pytest.raises(ValueError, match="lies inside the data folder"):
      train.train_and_evaluate(config, str(workdir))
  assert sorted(os.listdir(tmp_path / "imgs")) == [f"{i:03d}.png" for i in range(4)]
  beside = tmp_path / "imgs_run"  # a sibling whose name starts the same is not inside
  workdir_lib.check_outside_data(str(beside), str(tmp_path / "imgs"))
  workdir_lib.check_outside_data(str(tmp_path / "imgs" / "run"), str(tmp_path / "x.npy"))


def test_fid_on_one_image_is_refused_before_the_weights_load(tmp_path, monkeypatch):
  """FID on a data set of one image ended, after the Inception weights loaded and the
  reference was computed (a minute on 2 cores), in 'need at least 2 feature vectors'. It is
  now refused before the weights are touched, naming the count and the ways out."""
  from infonoise_jax.data.sources import load_source
  from infonoise_jax.evaluation import model_fid
  from infonoise_jax.mesh import make_mesh

  np.save(tmp_path / "one.npy", _pixels(n=1))
  config = _config(tmp_path / "one.npy")
  config.train.fid_every = 4
  monkeypatch.setattr(model_fid, "make_extractor", lambda *a, **k: pytest.fail("weights loaded"))
  with pytest.raises(
    ValueError, match=r"1 image, and a Frechet distance needs at least 2.*fid_every=0"
  ):
    model_fid.PeriodicFID(config, make_mesh(), load_source(config))
  np.save(tmp_path / "two.npy", _pixels(n=2))
  assert model_fid.reference_source(_config(tmp_path / "two.npy")).num_examples == 2
