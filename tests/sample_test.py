"""Tests for the sample command (infonoise_jax/sample.py) on a tiny trained InfoNoise run."""

import dataclasses
import json
import pathlib

import jax
import numpy as np
import pytest

from infonoise_jax import restore, sample, solvers, train
from infonoise_jax.data.sources import samples_data_record
from infonoise_jax.evaluation import images
from infonoise_jax.model_sampler import Sampler, sampler_config
from infonoise_jax.schedules import make_schedule
from infonoise_jax.validation import load_config_file

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """(workdir, final state) of configs/test.py (MLP on digits, InfoNoise, 8 steps)."""
  workdir = tmp_path_factory.mktemp("run") / "infonoise"
  state = train.train_and_evaluate(load_config_file(ROOT / "configs" / "test.py"), str(workdir))
  return str(workdir), jax.device_get(state)


@pytest.fixture(scope="module")
def command_samples(trained, tmp_path_factory):
  """The command's output: 10 samples, seed 3, InfoGrid, on all 8 devices (one batch of 16)."""
  out = tmp_path_factory.mktemp("out")
  sample.main(
    [
      f"--workdir={trained[0]}",
      "--num=10",
      f"--out={out}",
      "--seed=3",
      "--grid=infogrid",
      "--method=exp_heun",
    ]
  )
  return out


def _restore(workdir: str, devices=None):
  """(sampler, state, step) of a run, as the sample command builds them."""
  run = restore.restore_run(workdir, devices=devices)
  return Sampler(run.config, run.model, run.schedule, run.mesh, run.data_shape), run.state, run.step


@pytest.fixture(scope="module")
def restored(trained):
  return _restore(trained[0])


def _infogrid(sampler, schedule_state):
  return sampler.sigmas(schedule_state, sampler_config(sampler.config, "infogrid"))


def test_restore_gives_the_trained_state_without_reading_data(trained, monkeypatch):
  workdir, final = trained
  from infonoise_jax import data
  from infonoise_jax.data import sources

  for module in (data, sources):  # wherever the sampler could reach the data from
    monkeypatch.setattr(module, "load_source", lambda *_: pytest.fail("read the data"))
  sampler, state, step = _restore(workdir)
  assert step == 8 and sampler.data_shape == (8, 8, 1)
  for got, want in [
    (state.ema_params, final.ema_params),
    (state.schedule_state, final.schedule_state),
  ]:
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(got), want)


def test_command_writes_requested_samples_and_grid(trained, command_samples):
  from PIL import Image

  with np.load(command_samples / "samples.npz") as f:
    x, u8 = f["samples"], f["uint8"]
    assert int(f["seed"]) == 3 and int(f["step"]) == 8 and str(f["grid"]) == "infogrid"
    assert str(f["method"]) == "exp_heun"
    command_keys = set(f.files)
  with np.load(pathlib.Path(trained[0]) / "samples.npz") as f:  # the trainer's: one format
    assert set(f.files) == command_keys
    assert f["samples"].dtype == np.float32 and str(f["method"]) == "heun"
    # what they are samples of, as the harness records it (fid_of_samples.py checks it)
    assert samples_data_record(f) == {
      "data": "digits", "binarized": False, "reference_data": None, "image_size": 0
    }  # fmt: skip
    np.testing.assert_array_equal(f["uint8"], images.to_uint8(f["samples"]))
  assert x.shape == (10, 8, 8, 1) and x.dtype == np.float32 and np.all(np.isfinite(x))
  np.testing.assert_array_equal(u8, images.to_uint8(x))
  assert len(np.unique(x.reshape(10, -1), axis=0)) == 10  # distinct samples
  grid = Image.open(command_samples / "samples.png")
  assert grid.size[0] >= 4 * 32 and grid.size[1] >= 3 * 32  # 10 images upscaled to 32, 4 cols


def test_command_says_which_checkpoint_and_sampler_drew_the_samples(trained, tmp_path, capsys):
  """Without --step the newest checkpoint is sampled: on a run still training, whichever was
  saved last, so the summary names it (the step was only inside samples.npz)."""
  sample.main([f"--workdir={trained[0]}", "--num=2", f"--out={tmp_path}", "--seed=5"])
  first = capsys.readouterr().out.splitlines()[0]
  assert first.endswith("checkpoint step 8 (heun on the karras grid, 7 levels, seed 5):"), first


def test_infogrid_uses_the_checkpointed_profile(restored):
  sampler, state, _ = restored
  learned = np.asarray(_infogrid(sampler, state.schedule_state))
  initial = np.asarray(_infogrid(sampler, sampler.schedule.init_state()))
  karras = np.asarray(solvers.make_sigmas(sampler.config))
  n = sampler.config.sampler.num_steps  # levels, then sigma = 0
  assert learned.shape == karras.shape == (n + 1,) and learned[-1] == 0
  assert np.all(np.diff(learned) < 0)
  assert not np.allclose(learned, initial) and not np.allclose(learned[:-1], karras[:-1])


def test_seeds_reproduce_across_calls_devices_and_batch_sizes(trained, command_samples):
  written = np.load(command_samples / "samples.npz")["samples"]
  sampler, state, _ = _restore(trained[0], devices=jax.devices()[:1])
  config = sampler_config(sampler.config, method="exp_heun")  # as the command's --method
  sampler = dataclasses.replace(sampler, config=config)
  sigmas = _infogrid(sampler, state.schedule_state)
  one_device = sampler.draw_all(state.ema_params, sigmas, 10, seed=3, batch=4)
  # 1 device in batches of 4 vs the command's 8 devices in one batch of 16: the same samples
  # (to float rounding), since sample j's noise comes from its own key fold_in(key(3), j).
  np.testing.assert_allclose(one_device, written, rtol=1e-5, atol=1e-5)
  again = sampler.draw_all(state.ema_params, sigmas, 10, seed=3, batch=4)
  np.testing.assert_array_equal(again, one_device)  # same seed, same layout: identical
  prefix = sampler.draw_all(state.ema_params, sigmas, 4, seed=3, batch=4)
  np.testing.assert_array_equal(prefix, one_device[:4])  # a smaller --num: the same first ones
  other = sampler.draw_all(state.ema_params, sigmas, 10, seed=4, batch=4)
  assert np.min(np.abs(other - one_device).reshape(10, -1).max(axis=1)) > 1e-2


def _copy_config(workdir: str, dest: pathlib.Path, **config_edits) -> str:
  """A run directory holding only `workdir`'s config.json (edited: section__key=value)."""
  dest.mkdir()
  config = json.loads((pathlib.Path(workdir) / "config.json").read_text())
  for key, value in config_edits.items():
    section, leaf = key.split("__")
    config[section][leaf] = value
  (dest / "config.json").write_text(json.dumps(config))
  return str(dest)


def test_infogrid_on_a_non_infonoise_run_is_a_clear_error(trained, restored, tmp_path):
  lognormal = _copy_config(trained[0], tmp_path / "lognormal", schedule__name="lognormal")
  with pytest.raises(ValueError, match=r"information profile.*'lognormal'.*--grid=karras"):
    sample.sample_run(lognormal, 4, str(tmp_path / "out"), grid="infogrid")
  # The library check, for a sampler whose schedule has no profile.
  sampler = restored[0]
  config = sampler.config.copy_and_resolve_references()
  config.schedule.name = "lognormal"
  other = Sampler(config, sampler.model, make_schedule(config), sampler.mesh, (8, 8, 1))
  with pytest.raises(ValueError, match="--grid=karras"):
    other.sigmas({}, sampler_config(config, grid="infogrid_rescaled"))


def test_missing_run_checkpoint_or_step_are_clear_errors(trained, tmp_path):
  workdir, _ = trained
  with pytest.raises(FileNotFoundError, match="config.json"):
    sample.sample_run(str(tmp_path), 4, str(tmp_path / "out"))
  empty = _copy_config(workdir, tmp_path / "untrained")
  with pytest.raises(FileNotFoundError, match="No checkpoint"):
    sample.sample_run(empty, 4, str(tmp_path / "out"))
  with pytest.raises(ValueError, match=r"--step=5.*saved steps: \[4, 8\]"):
    sample.sample_run(workdir, 4, str(tmp_path / "out"), step=5)


@pytest.mark.parametrize("bad", ["0", "-3", "four"])
def test_a_batch_below_one_is_a_usage_error(bad, capsys):
  from infonoise_jax import evaluate

  for parse in (sample._parse, evaluate._parse):
    with pytest.raises(SystemExit):
      parse(["--workdir=run", f"--batch={bad}"])
    assert "--batch" in capsys.readouterr().err
  assert sample._parse(["--workdir=run", "--batch=3"]).batch == 3


def test_stochastic_sampler_takes_churn_from_set_and_warns_without_it(trained, tmp_path, caplog):
  """--method=stochastic with the run's s_churn=0 is Heun exactly (and says so); with
  --set sampler.s_churn=... it adds noise, so its samples differ from Heun's."""
  workdir, _ = trained
  draw = lambda name, **kw: sample.sample_run(workdir, 4, str(tmp_path / name), seed=1, **kw)[0]
  heun = draw("heun", method="heun", num_steps=6, grid="karras")
  solvers._warned.discard(("churn", "stochastic", 0))
  with caplog.at_level("WARNING", logger=solvers.__name__):
    plain = draw("plain", method="stochastic", num_steps=6, grid="karras")
  assert "s_churn=0 adds no noise" in caplog.text
  np.testing.assert_array_equal(plain, heun)
  churned = draw(
    "churn",
    method="stochastic",
    num_steps=6,
    grid="karras",
    overrides=["sampler.s_churn=40", "sampler.s_tmin=0.05", "sampler.s_tmax=50"],
  )
  assert np.abs(churned - heun).max() > 1e-3
  # churn without the stochastic method has no effect: said, not silently ignored
  solvers._warned.discard(("churn", "heun", 1))
  caplog.clear()
  with caplog.at_level("WARNING", logger=solvers.__name__):
    ignored = draw(
      "ignored", method="heun", num_steps=6, grid="karras", overrides=["sampler.s_churn=40"]
    )
  assert "sampler.s_churn=40 has no effect with sampler.name='heun'" in caplog.text
  np.testing.assert_array_equal(ignored, heun)


def test_set_changes_sampler_keys_only_before_anything_is_restored(trained, tmp_path, monkeypatch):
  workdir, _ = trained

  def no_restore(*a, **k):
    raise AssertionError("restored before the overrides were checked")

  monkeypatch.setattr(restore, "restore_run", no_restore)
  with pytest.raises(
    ValueError,
    match=r"--set model.channels=8: .*sampler.*keys .* the rest of a run's config",
  ):
    sample.sample_run(workdir, 4, str(tmp_path), overrides=["model.channels=8"])
  with pytest.raises(ValueError, match='no such config key. Did you mean "sampler.s_churn"'):
    sample.sample_run(workdir, 4, str(tmp_path), overrides=["sampler.s_chrun=40"])
  with pytest.raises(ValueError, match="sampler.s_churn must be >= 0"):
    sample.sample_run(workdir, 4, str(tmp_path), overrides=["sampler.s_churn=-1"])
  (tmp_path / "a_file").write_text("x")
  with pytest.raises(ValueError, match="is a file: give a folder"):
    sample.sample_run(workdir, 4, str(tmp_path / "a_file"))
  args = sample._parse(["--workdir=run", "--set", "sampler.s_churn=40", "--set", "sampler.rho=5"])
  assert args.set == ["sampler.s_churn=40", "sampler.rho=5"]


def test_out_at_a_runs_folder_is_refused_before_anything_is_restored(
  trained, tmp_path, monkeypatch
):
  """`--out=<the run's workdir>` overwrote the trainer's final samples.npz (and samples.png),
  the file the trainer reads back to tell a finished run."""
  import shutil

  workdir, _ = trained
  run = pathlib.Path(workdir)
  kept = {name: (run / name).read_bytes() for name in ("samples.npz", "samples.png")}
  monkeypatch.setattr(restore, "restore_run", lambda *a, **k: pytest.fail("restored"))
  for spelled in (workdir, f"{workdir}/", f"{workdir}/../{run.name}"):
    with pytest.raises(ValueError, match=r"the run's own folder.*samples.npz \(step 8\) would be "
                       r"overwritten.*--out=.*samples"):  # fmt: skip
      sample.main([f"--workdir={workdir}", "--num=2", f"--out={spelled}", "--debug"])
  other = tmp_path / "other_run"  # another run's folder (its config.json): refused too
  shutil.copytree(run, other, ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
  with pytest.raises(ValueError, match=r"a training run's folder \(it holds config.json\)"):
    sample.sample_run(workdir, 2, str(other))
  assert {name: (run / name).read_bytes() for name in kept} == kept  # nothing lost
  assert (other / "samples.npz").read_bytes() == kept["samples.npz"]


def test_set_items_and_the_flags_they_duplicate_are_refused_and_inf_is_a_float():
  """`--steps=5 --set sampler.num_steps=9` drew with 9 levels without a word; and
  `--set sampler.s_tmax=inf` (the default, which literals cannot spell) was a type error."""
  from configs.default import get_config

  config = get_config()
  for kwargs, item in (
    ({"num_steps": 5}, "sampler.num_steps=9"),
    ({"grid": "karras"}, "sampler.grid='infogrid'"),
    ({"method": "heun"}, "sampler.name=euler"),
  ):
    with pytest.raises(ValueError, match=r"both set sampler\.\w+: give one of them"):
      sampler_config(config, overrides=[item], **kwargs)
  assert sampler_config(config, num_steps=5, overrides=["sampler.grid=infogrid"]).sampler.grid
  c = sampler_config(config, overrides=["sampler.s_tmax=10", "sampler.s_tmin=0.05"])
  assert c.sampler.s_tmax == 10.0
  c = sampler_config(c, overrides=["sampler.s_tmax=inf", "sampler.s_noise=1.003"])
  assert c.sampler.s_tmax == float("inf") and c.sampler.s_noise == 1.003
  with pytest.raises(ValueError, match="s_tmax='infinite'"):  # other words still refused
    sampler_config(config, overrides=["sampler.s_tmax=infinite"])
  with pytest.raises(ValueError, match="num_steps='inf'"):  # and inf only where a float goes
    sampler_config(config, overrides=["sampler.num_steps=inf"])


def test_infogrid_on_a_profile_never_estimated_is_warned_about(restored, caplog):
  """InfoGrid from a checkpoint inside the warm-up silently followed the initial density."""
  sampler, state, step = restored
  infogrid = dataclasses.replace(sampler, config=sampler_config(sampler.config, "infogrid"))
  assert int(state.schedule_state["refreshes"]) > 0  # the trained run: learned, no warning
  fresh = {**state.schedule_state, "refreshes": np.zeros((), np.int32)}
  for s, schedule_state, warned in (
    (infogrid, state.schedule_state, False),
    (infogrid, fresh, True),
    (dataclasses.replace(sampler, config=sampler_config(sampler.config, "karras")), fresh, False),
  ):
    caplog.clear()
    with caplog.at_level("WARNING"):
      s.warn_if_profile_unlearned(schedule_state, step)
    said = [r.getMessage() for r in caplog.records if "no learned profile" in r.getMessage()]
    assert bool(said) == warned, (s.config.sampler.grid, said)


def test_out_inside_the_runs_data_folder_is_refused_before_anything_is_restored(
  tmp_path, monkeypatch
):
  """`--out=<inside the run's data.path folder>` put samples.png among the training images:
  the resume then failed on it as 'an image of another size; resize the images'."""
  from PIL import Image

  imgs = tmp_path / "imgs"
  imgs.mkdir()
  Image.fromarray(np.zeros((8, 8), np.uint8)).save(imgs / "a.png")
  config = load_config_file(ROOT / "configs" / "test.py")
  config.data.update({"name": "images", "path": str(imgs)})
  (tmp_path / "run").mkdir()
  (tmp_path / "run" / "config.json").write_text(config.to_json())
  monkeypatch.setattr(restore, "restore_run", lambda *a, **k: pytest.fail("restored"))
  with pytest.raises(ValueError, match=r"--out=.*imgs/gen lies inside the data folder"):
    sample.main([f"--workdir={tmp_path / 'run'}", "--num=2", f"--out={imgs / 'gen'}", "--debug"])
  assert sorted(p.name for p in imgs.iterdir()) == ["a.png"]
