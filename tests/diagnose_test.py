"""The diagnostic against closed forms and against the estimator's own learned profile."""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infonoise_jax import diagnose, evaluate, profiles, train
from infonoise_jax.validation import load_config_file

TEST_CONFIG = "configs/test.py"


def mixture_config():
  c = load_config_file(TEST_CONFIG)
  c.data.name = "gaussian_mixture"
  c.data.dim = 8
  c.data.num_components = 4
  c.data.component_std = 0.1
  return c


def test_mixture_profile_matches_closed_form(tmp_path):
  c = mixture_config()
  r = diagnose.diagnose(
    c, str(tmp_path), ["lognormal", "loguniform"], "mixture", num_heldout=2000, grid_points=24
  )
  sigma_G = np.exp(r["log_sigma"])
  src_mix = diagnose.load_source(c).mixture
  exact_G = np.asarray(
    profiles.mixture_mmse(
      jax.random.key(0),
      jnp.asarray(sigma_G, jnp.float32),
      jnp.asarray(src_mix.means_KD, jnp.float32),
      jnp.full(len(src_mix.weights_K), src_mix.std, jnp.float32),
      jnp.asarray(src_mix.weights_K, jnp.float32),
      num_samples=4096,
    )
  )
  # two independent Monte Carlo estimates (2000 held-out errors vs 4096 exact posterior traces)
  # (largest gap, 7%, in the decision region sigma ~ 0.3-0.5 where errors are heavy-tailed)
  np.testing.assert_allclose(r["mmse"], exact_G, rtol=0.12)
  # a narrow-component mixture: plateau q = 1 below the component width, so c = std / 2
  assert r["pivot"] == pytest.approx(src_mix.std / 2, rel=0.2)
  names = [row.name for row in r["rows"]]
  assert names == ["lognormal", "loguniform"]
  for row in r["rows"]:
    assert 0.0 <= row.mismatch <= 1.0 and 0.0 <= row.in_window <= 1.0
  assert (tmp_path / "diagnose.png").stat().st_size > 0
  assert "| lognormal |" in (tmp_path / "diagnose.md").read_text()


def test_allocation_equal_to_profile_has_zero_mismatch():
  x_G = np.linspace(-6, 4, 50)
  rho_G = np.exp(-0.5 * (x_G + 1) ** 2)
  rho_G /= rho_G.sum()
  from infonoise_jax import edm

  density_G = rho_G / np.asarray(edm.loss_weight(np.exp(x_G), 0.5))  # pi = rho / w
  row = diagnose.compare("matched", x_G, density_G, rho_G, 0.5)
  assert row.mismatch == pytest.approx(0.0, abs=1e-6)
  assert row.in_window == pytest.approx(0.8, abs=0.05)  # the window holds 80% of rho
  disjoint = diagnose.compare("far", x_G, np.where(x_G > 3.5, 1.0, 0.0), rho_G, 0.5)
  assert disjoint.mismatch > 0.99 and disjoint.in_window == 0.0


def test_trained_run_reproduces_the_estimators_profile(tmp_path):
  c = load_config_file(TEST_CONFIG)
  c.train.batch_size = 64
  c.train.num_steps = 300
  c.train.checkpoint_every = 300
  c.train.log_every = 100
  c.optim.warmup_steps = 20
  c.schedule.infonoise.warmup_steps = 20
  c.schedule.infonoise.refresh_every = 10
  c.schedule.infonoise.ema_beta = 0.5
  c.schedule.infonoise.base = "loguniform"  # every bin sampled during warm-up
  c.schedule.infonoise.floor = 0.2  # and afterwards
  c.schedule.infonoise.smoothing = 0.0
  workdir = str(tmp_path / "run")
  state = train.train_and_evaluate(c, workdir, devices=jax.devices()[:1])
  out = str(tmp_path / "diag")
  diagnose.main(
    [
      f"--workdir={workdir}",
      f"--out={out}",
      "--params=params",
      "--schedules=lognormal",
      "--num_heldout=1797",
      "--grid_points=64",
    ]
  )
  prof = np.load(f"{out}/profile.npz")
  sched = train.make_schedule(c)
  centres_K = np.asarray(sched.grid.centres())
  m_K = np.asarray(state.schedule_state["m_K"])
  seen_K = np.asarray(state.schedule_state["seen_K"])
  mine_K = np.exp(np.interp(centres_K, prof["log_sigma"], np.log(prof["mmse"])))
  log_ratio = np.log(mine_K[seen_K] / m_K[seen_K])
  assert seen_K.sum() >= 12
  # the estimator averages training-batch errors of recent params (EMA over refreshes);
  # the diagnostic evaluates the final params on the same data: same curve up to that lag
  assert np.median(np.abs(log_ratio)) < 0.15, log_ratio
  assert np.max(np.abs(log_ratio)) < 0.5, log_ratio


def test_empirical_prior_is_evaluated_on_its_own_points(tmp_path):
  c = mixture_config()
  r = diagnose.diagnose(
    c, str(tmp_path), ["lognormal"], "empirical", num_heldout=64, num_points=64, grid_points=8
  )
  assert "own points" in r["markdown"]
  # below the nearest-neighbour scale each point is recovered exactly: q -> 0, not 1/sigma^2
  assert r["q"][0] < 1e-3
  # far above it the posterior mean is the points' mean: mmse -> their per-dim variance
  x = diagnose.load_source(c).array
  assert r["mmse"][-1] == pytest.approx(np.var(x, axis=0).mean(), rel=0.3)


def test_data_without_a_profile_is_refused_not_printed_as_nan(tmp_path):
  """A one-point empirical prior recovers every noisy example exactly, and so does a data set
  of identical examples: every error is 0 and the normalised profile would be 0/0 (it printed
  NaN mismatches with exit 0). Refused, the first before the denoiser is built, saying why."""
  c = mixture_config()
  with pytest.raises(ValueError, match=r"1 data point: a one-point prior .* at least 2 points"):
    diagnose.diagnose(c, str(tmp_path / "a"), ["lognormal"], "empirical", num_points=1)
  same = np.repeat(np.random.default_rng(0).integers(0, 256, (1, 8, 8), np.uint8), 16, axis=0)
  np.save(tmp_path / "same.npy", same)
  c = load_config_file(TEST_CONFIG)
  c.data.name, c.data.path = "images", str(tmp_path / "same.npy")
  with pytest.raises(ValueError, match="errors on 16 examples are 0 at every sigma"):
    diagnose.diagnose(c, str(tmp_path / "b"), ["lognormal"], "empirical", grid_points=8)
  assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_schedule_rows_say_which_law_they_show():
  """An adaptive schedule named in --schedules has no trained state: its row is its initial
  law and says so (InfoNoise's is its warm-up base, the log-normal); the run's own row names
  its schedule."""
  from configs import default
  from infonoise_jax.schedules import make_schedule

  c = default.get_config()
  sched = make_schedule(c)
  x_G = np.linspace(np.log(0.002), np.log(80.0), 32)
  d = diagnose.schedule_densities(
    c, ["lognormal", "infonoise", "run"], x_G, (sched, sched.init_state())
  )
  assert list(d) == [
    "lognormal",
    "infonoise (initial law, untrained)",
    "run (infonoise, as trained)",
  ]
  np.testing.assert_allclose(
    d["infonoise (initial law, untrained)"], d["run (infonoise, as trained)"]
  )


def _fasta(path, probs, records=40, length=700, seed=0):
  rng = np.random.default_rng(seed)
  with open(path, "w") as f:
    for i in range(records):
      seq = "".join(rng.choice(list("ACGT"), size=length, p=probs))
      f.write(f">r{i}\n{seq}\n")


def test_onehot_prior_on_token_data_matches_the_closed_form(tmp_path, capsys):
  """`diagnose --config=configs/dna.py:cpu` runs as shipped (edm.sigma_data = 0 resolved from
  the data, the onehot prior by default, the config's pinned gate) and its profile of held-out
  windows is the closed form of independent positions with the data's symbol frequencies."""
  probs = np.array([0.4, 0.1, 0.2, 0.3])
  _fasta(tmp_path / "seq.fa", probs)
  out = tmp_path / "diag"
  diagnose.main(
    [
      "--config=configs/dna.py:cpu",
      f"--set=data.path={tmp_path / 'seq.fa'}",
      f"--out={out}",
      "--num_heldout=512",
      "--grid_points=16",
    ]
  )
  printed = capsys.readouterr()
  assert "denoiser: onehot" in printed.out and '"pivot": 0.2' in printed.out
  assert "warning" not in printed.err
  # the recipe's pinned pivot whatever the schedule: a log-normal arm of the same recipe is
  # diagnosed against the same target (it got the onset rule's c, about 0.007, 2026-12-07)
  diagnose.main(
    [
      "--config=configs/dna.py:cpu",
      f"--set=data.path={tmp_path / 'seq.fa'}",
      "--set=schedule.name=lognormal",
      f"--out={tmp_path / 'diag_lognormal'}",
      "--num_heldout=64",
      "--grid_points=8",
    ]
  )
  assert '"pivot": 0.2' in capsys.readouterr().out
  prof = np.load(out / "profile.npz")
  sigma_G = jnp.asarray(np.exp(prof["log_sigma"]), jnp.float32)
  exact_G = np.asarray(profiles.onehot_mmse(jax.random.key(1), sigma_G, probs, 1.0, 4096))
  # held-out errors of 512 windows x 128 positions against 4096 exact posterior traces;
  # the frequencies are the sample's (~1% off the generating ones)
  np.testing.assert_allclose(prof["mmse"], exact_G, rtol=0.1, atol=1e-6)
  # an explicit empirical prior on token data warns what it measures
  diagnose.main(
    [
      "--config=configs/dna.py:cpu",
      f"--set=data.path={tmp_path / 'seq.fa'}",
      f"--out={tmp_path / 'emp'}",
      "--prior=empirical",
      "--num_points=64",
      "--num_heldout=64",
      "--grid_points=4",
    ]
  )
  assert "distance between windows" in capsys.readouterr().err


@pytest.mark.parametrize(
  "flags, message",
  [
    (["--num_heldout=0"], "--num_heldout: must be >= 1"),
    (["--batch=0"], "--batch: must be >= 1"),
    (["--grid_points=3"], "--grid_points must be >= 4"),
    (["--schedules=lognormal,foo"], "--schedules: unknown 'foo'"),
    (["--schedules=,"], "--schedules=',' names no schedule"),
    (["--gate=-1"], "--gate must be onset, none or a pivot sigma > 0"),
    (["--gate=abc"], "--gate must be onset, none or a pivot sigma > 0"),
  ],
)
def test_bad_flags_are_usage_errors_naming_the_flag(flags, message, capsys):
  with pytest.raises(SystemExit) as e:
    diagnose.parse(["--out=/unused", f"--config={TEST_CONFIG}", *flags])
  assert e.value.code == 2 and message in capsys.readouterr().err


def test_a_pivot_outside_the_noise_range_is_refused_before_the_data(tmp_path, monkeypatch):
  def no_data(config):
    raise AssertionError("the data was loaded before the gate was checked")

  monkeypatch.setattr(diagnose, "load_source", no_data)
  with pytest.raises(ValueError, match=r"--gate=1000000.0 is outside the noise range"):
    diagnose.diagnose(mixture_config(), str(tmp_path), ["lognormal"], "mixture", gate="1000000.0")
  assert not any(tmp_path.iterdir())


def test_importance_weighted_peers_are_judged_by_the_objective_they_train():
  """VDM++ samples from an adapted pi but weights each draw by base / pi, so its row is its
  base law's allocation, not pi's (the diagnostic used to show pi alone)."""
  from configs import default
  from infonoise_jax.schedules import make_schedule

  c = default.get_config()
  c.schedule.name = "vdmpp"
  sched = make_schedule(c)
  state = sched.init_state()
  pmf_K = jnp.linspace(1.0, 3.0, state["pmf_K"].shape[0])
  state = {**state, "pmf_K": pmf_K / pmf_K.sum(), "num_updates": jnp.int32(10**6)}
  x_G = np.linspace(np.log(0.002), np.log(80.0), 64)
  d = diagnose.schedule_densities(c, ["lognormal", "run"], x_G, (sched, state))
  pi_G = np.asarray(sched.density(state, jnp.asarray(x_G, jnp.float32)))
  base_G = np.asarray(sched.base_density(jnp.asarray(x_G, jnp.float32)))
  assert np.abs(pi_G / pi_G.sum() - base_G / base_G.sum()).sum() > 0.2  # pi is not the base
  np.testing.assert_allclose(d["run (vdmpp, as trained)"], base_G, rtol=1e-5)


def test_a_run_whose_data_moved_is_diagnosed_with_its_new_place(tmp_path, monkeypatch, capsys):
  """With --workdir, --set may say where the run's data lies now (and nothing else); the data
  is read before the checkpoint is restored, so a missing file fails first."""
  from infonoise_jax import restore

  images = np.random.default_rng(0).integers(0, 256, (64, 8, 8), np.uint8)
  np.save(tmp_path / "old.npy", images)
  c = load_config_file(TEST_CONFIG)
  c.data.name, c.data.path = "images", str(tmp_path / "old.npy")
  c.train.num_steps = 2
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(c, workdir, devices=jax.devices()[:1])
  (tmp_path / "old.npy").rename(tmp_path / "new.npy")
  flags = [f"--workdir={workdir}", "--schedules=lognormal", "--num_heldout=16", "--grid_points=8"]
  real = restore.restore_run
  monkeypatch.setattr(restore, "restore_run", lambda *a, **k: pytest.fail("restored first"))
  with pytest.raises(SystemExit):
    diagnose.main([*flags, f"--out={tmp_path / 'd1'}"])
  assert "old.npy" in capsys.readouterr().err
  # other data (another shape) is refused before the restore, by diagnose and by evaluate
  rgb = tmp_path / "rgb.npy"
  np.save(rgb, np.random.default_rng(1).integers(0, 256, (64, 12, 12, 3), np.uint8))
  with pytest.raises(SystemExit):
    diagnose.main([*flags, f"--out={tmp_path / 'd1'}", "--set", f"data.path={rgb}"])
  want = r"shape \(12, 12, 3\), but .* trained on examples of shape \(8, 8, 1\)"
  assert re.search(want, capsys.readouterr().err)
  with pytest.raises(ValueError, match=want):
    evaluate.evaluate(
      workdir, 8, 1, weights=str(tmp_path / "none.npz"), overrides=[f"data.path={rgb}"]
    )
  with pytest.raises(SystemExit):  # a gate outside the run's noise range, before the restore
    diagnose.main([*flags, f"--out={tmp_path / 'd1'}", "--gate=0.0001"])
  assert "--gate=0.0001 is outside the noise range" in capsys.readouterr().err
  monkeypatch.setattr(restore, "restore_run", real)
  out = tmp_path / "d2"
  diagnose.main([*flags, f"--out={out}", "--set", f"data.path={tmp_path / 'new.npy'}"])
  assert (out / "diagnose.md").exists()
  with pytest.raises(SystemExit):
    diagnose.parse([*flags, "--out=/unused", "--set", "model.hidden_dims=(8,)"])
  assert "only where the run's data now lies may change" in capsys.readouterr().err


def test_a_bad_prior_is_refused_before_anything_is_read(tmp_path, capsys):
  for flags, says in [
    ([f"--workdir={tmp_path}", "--prior=bogus"], "argument --prior: invalid choice: 'bogus'"),
    ([f"--config={TEST_CONFIG}", "--out=/x", "--prior=model"], "--prior=model needs --workdir"),
  ]:
    with pytest.raises(SystemExit) as e:
      diagnose.parse(flags)
    assert e.value.code == 2 and says in capsys.readouterr().err


def test_out_defaults_to_the_runs_diagnose_folder_and_is_needed_with_a_config(tmp_path, capsys):
  assert diagnose.parse([f"--workdir={tmp_path}"]).out == str(tmp_path / "diagnose")
  assert diagnose.parse([f"--workdir={tmp_path}", "--out=/x"]).out == "/x"
  with pytest.raises(SystemExit) as e:
    diagnose.parse([f"--config={TEST_CONFIG}"])
  assert e.value.code == 2 and "--config needs --out=<folder>" in capsys.readouterr().err


def test_out_inside_the_data_folder_is_refused_before_the_data_is_read(tmp_path, monkeypatch):
  """--out inside data.path put diagnose.png and profile.npz among the training images: the
  next run on that folder, or a resume, failed on them as images of another size."""
  from PIL import Image

  imgs = tmp_path / "imgs"
  imgs.mkdir()
  Image.fromarray(np.zeros((8, 8), np.uint8)).save(imgs / "a.png")
  monkeypatch.setattr(diagnose, "load_source", lambda c: pytest.fail("the data was read"))
  flags = ["--config=configs/test.py", "--set=data.name=images", f"--set=data.path={imgs}"]
  with pytest.raises(ValueError, match=r"--out=.*imgs/diag lies inside the data folder"):
    diagnose.main([*flags, f"--out={imgs / 'diag'}", "--debug"])
  assert sorted(p.name for p in imgs.iterdir()) == ["a.png"]
  # a run's: refused before its checkpoint is restored
  from infonoise_jax import restore

  config = load_config_file(TEST_CONFIG)
  config.data.update({"name": "images", "path": str(imgs)})
  (tmp_path / "run").mkdir()
  (tmp_path / "run" / "config.json").write_text(config.to_json())
  monkeypatch.setattr(restore, "check_step", lambda *a, **k: pytest.fail("restored"))
  with pytest.raises(ValueError, match=r"--out=.*imgs/diag lies inside the data folder"):
    diagnose.main([f"--workdir={tmp_path / 'run'}", f"--out={imgs / 'diag'}", "--debug"])
  assert sorted(p.name for p in imgs.iterdir()) == ["a.png"]


def test_a_bad_config_key_is_named_as_training_names_it(tmp_path, capsys):
  """`diagnose --config=... --set edm.sigma_min=-1` printed 'math domain error' (2026-12-07
  probe): the --config path validates the config as training does, before the data."""
  out = str(tmp_path / "d")
  with pytest.raises(SystemExit):
    diagnose.main(["--config=configs/test.py", "--set", "edm.sigma_min=-1.0", f"--out={out}"])
  err = capsys.readouterr().err
  assert "edm.sigma_min must be finite and > 0, got -1.0" in err and "Traceback" not in err
  assert not os.path.exists(out)


def test_the_device_count_need_not_divide_the_training_batch(tmp_path, monkeypatch, capsys):
  """diagnose batches by its own --batch: on 3 devices configs/test.py (train.batch_size 16)
  was refused by training's divisibility check once --config was validated (review of
  2026-12-07); the next check, the gate's range, is reached instead."""
  monkeypatch.setattr(jax, "device_count", lambda *a: 3)
  out = str(tmp_path / "d")
  with pytest.raises(SystemExit):
    diagnose.main(["--config=configs/test.py", "--gate=1000000.0", f"--out={out}"])
  err = capsys.readouterr().err
  assert "--gate=1000000.0 is outside the noise range" in err and "divisible" not in err
