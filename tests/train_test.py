"""End-to-end tests of the trainer: sharding equivalence, resume, compile count, errors."""

import gzip
import json
import logging
import os
import pathlib
import shlex
import sys

import jax
import numpy as np
import pytest

from infonoise_jax import checkpointing, diagnostics, restore, train, train_state
from infonoise_jax.validation import load_config_file

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _config(variant: str = "", **overrides):
  c = load_config_file(ROOT / "configs" / "test.py", variant)
  c.update_from_flattened_dict(overrides)
  return c


def _assert_trees_equal(a, b, rtol=0.0, atol=0.0):
  leaves_a, tree_a = jax.tree.flatten(a)
  leaves_b, tree_b = jax.tree.flatten(b)
  assert tree_a == tree_b
  for x, y in zip(leaves_a, leaves_b, strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def _run_steps(config, devices, num_steps):
  run = train.Run(config, "/tmp/unused", devices)
  state = run.init_fn()
  for step in range(num_steps):
    state, _ = run.train_step(state, run.global_batch(run.pipeline.batch(step)))
  return run, jax.device_get(state)


@pytest.fixture(scope="module")
def stepped():
  """configs/test.py's 8 steps on the eight devices, called one by one outside the trainer
  (no CompileAhead): (the Run, {6: the state after 6 steps, 8: the final state}), on the
  host. Shared by the tests that only read them (one compiled step for all of them)."""
  run = train.Run(_config(), "/tmp/unused", jax.devices())
  state, after = run.init_fn(), {}
  for step in range(8):
    state, _ = run.train_step(state, run.global_batch(run.pipeline.batch(step)))
    if step + 1 in (6, 8):
      after[step + 1] = jax.device_get(state)
  return run, after


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
  """configs/test.py trained straight through by the trainer: (its workdir, the final state on
  the host). Shared by the tests that compare another way to train with it (module scope: set
  up before the autouse fixture that keeps the step store off, so it is kept off here too)."""
  from infonoise_jax import step_executables

  with pytest.MonkeyPatch.context() as m:
    m.setattr(step_executables, "folder", lambda: None)
    workdir = str(tmp_path_factory.mktemp("trained") / "straight")
    return workdir, jax.device_get(train.train_and_evaluate(_config(), workdir))


@pytest.fixture(scope="module")
def trained(trained_run):
  return trained_run[1]


def test_one_device_and_eight_devices_give_the_same_state(stepped):
  _, state_1 = _run_steps(_config(), jax.devices()[:1], 6)
  state_8 = stepped[1][6]  # the same config's first 6 steps on the eight devices
  # Same math, different reduction order over the sharded batch: equal to float32 rounding.
  _assert_trees_equal(state_1, state_8, rtol=2e-5, atol=2e-6)
  assert int(state_8.schedule_state["refreshes"]) >= 2  # refreshes happened on device


def test_step_compiles_once_and_has_no_host_callbacks(stepped):
  run, _ = stepped  # 8 steps: spans warm-up and several refreshes
  assert run.train_step._cache_size() == 1
  state = run.init_fn()
  batch = run.global_batch(run.pipeline.batch(0))
  jaxpr = str(jax.make_jaxpr(run.train_step)(state, batch))
  assert "callback" not in jaxpr
  assert "infeed" not in jaxpr and "outfeed" not in jaxpr


def test_resume_is_bit_identical(resumed, trained):
  assert int(resumed["half"].step) == 4
  assert int(resumed["state"].step) == _config().train.num_steps
  _assert_trees_equal(trained, resumed["state"])


def test_the_schedule_history_spans_a_resume(resumed, trained_run):
  """The schedule-history heatmap's rows are kept with each checkpoint
  (<workdir>/schedule_history.npz): the resumed run's rows are the uninterrupted run's, the
  steps before the resume included (they were lost with the process before)."""
  straight = diagnostics.load_history(trained_run[0], 8)
  kept = diagnostics.load_history(resumed["workdir"], 8)
  assert [s for s, _ in resumed["history_at_4"]] == [2, 4]
  assert [s for s, _ in kept] == [s for s, _ in straight] == [2, 4, 6, 8]
  for (_, a), (_, b) in zip(kept, straight, strict=True):
    np.testing.assert_array_equal(a, b)
  assert [s for s, _ in diagnostics.load_history(resumed["workdir"], 5)] == [2, 4]  # from 5


def test_a_leafwise_run_resumes_with_the_flat_optimizer(tmp_path):
  """A run saved with the optimizer leaf by leaf (optim.flat_update=False, as every run before
  the flat layout) resumes under the default flat one: the checkpoint's Adam moments are
  converted, and the run ends where the uninterrupted leafwise run does, up to the clip's
  global norm summed in another order."""
  leafwise = {"optim.flat_update": False}
  straight = jax.device_get(train.train_and_evaluate(_config(**leafwise), str(tmp_path / "a")))
  train.train_and_evaluate(_config(**leafwise, **{"train.num_steps": 4}), str(tmp_path / "b"))
  config = _config()
  assert config.optim.flat_update
  resumed = jax.device_get(train.train_and_evaluate(config, str(tmp_path / "b")))
  assert train_state.optimizer_layout(resumed) == "flat"
  assert int(resumed.step) == config.train.num_steps
  converted = train_state.convert_optimizer_layout(straight, "flat")
  _assert_trees_equal(converted, resumed, rtol=1e-4, atol=1e-6)
  history = (tmp_path / "b" / "config_history.jsonl").read_text()
  assert '"optim.flat_update"' in history
  # What sample / evaluate / diagnose restore: the step-4 checkpoint of the switched run
  # (leafwise, while config.json now says flat), and a run whose config.json predates the key.
  early = restore.restore_run(str(tmp_path / "b"), step=4)
  assert early.step == 4 and train_state.optimizer_layout(early.state) == "flat"
  saved = json.loads((tmp_path / "a" / "config.json").read_text())
  del saved["optim"]["flat_update"]
  (tmp_path / "a" / "config.json").write_text(json.dumps(saved))
  old = restore.restore_run(str(tmp_path / "a"))
  assert train_state.optimizer_layout(old.state) == "leafwise"
  _assert_trees_equal(jax.device_get(old.state), straight)


def _count_compiles(fn):
  """Runs fn(); returns {jitted function name: [threads that compiled it]} (every compile,
  from the persistent cache or not, is one backend_compile event)."""
  import threading

  compiles = {}

  def on_event(name, secs, **kwargs):
    if name == "/jax/core/compile/backend_compile_duration":
      compiles.setdefault(kwargs.get("fun_name"), []).append(threading.current_thread().name)

  jax.monitoring.register_event_duration_secs_listener(on_event)
  try:
    fn()
  finally:
    jax.monitoring.unregister_event_duration_listener(on_event)
  return compiles


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
  """configs/test.py stopped after 4 of its 8 steps, then resumed to 8 in the same workdir by
  the trainer, the compiles of each part counted: {"fresh": the 4-step run's compiles,
  "resumed": the resume's, "half": the state at step 4, "state": the final state}, states on
  the host. Shared by the tests of the resume, of where the step compiles, and of the run-ahead
  bound (a run that stopped at step 4); the step store kept off, as in `trained`."""
  from infonoise_jax import step_executables

  out = {}
  with pytest.MonkeyPatch.context() as m:
    m.setattr(step_executables, "folder", lambda: None)
    workdir = str(tmp_path_factory.mktemp("resumed") / "run")

    def run(key, config):
      out[key] = jax.device_get(train.train_and_evaluate(config, workdir))

    out["fresh"] = _count_compiles(lambda: run("half", _config(**{"train.num_steps": 4})))
    out["history_at_4"] = diagnostics.load_history(workdir, 4)
    out["resumed"] = _count_compiles(lambda: run("state", _config()))
    out["workdir"] = workdir
  return out


def test_step_compiled_ahead_gives_the_same_state_bitwise(stepped, trained):
  plain = stepped[1][8]  # no CompileAhead
  assert int(plain.step) == int(trained.step) == _config().train.num_steps
  _assert_trees_equal(plain, trained)


def test_step_is_compiled_once_ahead_on_its_thread_fresh_and_resumed(resumed):
  for compiles in (resumed["fresh"], resumed["resumed"]):
    # Compiled ahead from the abstract state and reused by the loop's calls (and the
    # checkpoint guard's probe step): never compiled a second time on the main thread.
    assert compiles["jit(train_step)"] == ["compile_ahead"]
    assert compiles["jit(history_curve)"] == ["compile_ahead_helpers"]  # one jit per run
    for name in ("jit(accumulate)", "jit(compute_window)", "jit(_nonfinite_parts)"):
      # Module-level jits: compiled by an earlier test of this process, or ahead here.
      assert set(compiles.get(name, [])) <= {"compile_ahead_helpers"}


def test_error_while_compiling_ahead_is_raised_in_the_main_thread(tmp_path, monkeypatch):
  from infonoise_jax import steps

  def make_failing_step(*args):
    def step(state, batch):
      raise ValueError("the step cannot be traced: made up for this test")

    return step

  monkeypatch.setattr(steps, "make_train_step", make_failing_step)
  with pytest.raises(ValueError, match="cannot be traced: made up for this test"):
    train.train_and_evaluate(_config(), str(tmp_path / "step"))


def test_error_while_compiling_the_helpers_ahead_is_raised(tmp_path, monkeypatch):
  def fail(run, step_metrics):
    raise RuntimeError("helpers failed: made up for this test")

  monkeypatch.setattr(train, "_compile_helpers", fail)
  with pytest.raises(RuntimeError, match="helpers failed: made up for this test"):
    train.train_and_evaluate(_config(), str(tmp_path / "helpers"))


def test_digits_end_to_end_leaves_logs_checkpoint_and_images(tmp_path, caplog, monkeypatch):
  import gc

  from tensorboard.backend.event_processing import event_accumulator

  workdir = tmp_path / "run"
  frozen, freeze = [], gc.freeze
  monkeypatch.setattr(gc, "freeze", lambda: (freeze(), frozen.append(gc.get_freeze_count())))
  with caplog.at_level(logging.INFO, logger="absl"):
    train.train_and_evaluate(_config(), str(workdir))
  # the loop froze what setup made (out of the collector's scans) and unfroze it at the end
  assert len(frozen) == 1 and frozen[0] > 1000 and gc.get_freeze_count() == 0
  # One short progress line per log window (8 steps, log_every 2), the per-bin losses not.
  # where to point TensorBoard is said before the first step, not only at the end
  messages = [r.getMessage() for r in caplog.records]
  said = messages.index(
    f"TensorBoard: tensorboard --logdir {shlex.quote(str(workdir / 'tensorboard'))}"
  )
  assert said < min(i for i, m in enumerate(messages) if m.startswith("step "))
  progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
  assert [line.split(" | ")[0] for line in progress] == [f"step {s}/8" for s in (2, 4, 6, 8)]
  assert all(len(line) <= 100 and " | loss " in line and " img/s" in line for line in progress)
  ours = [r.getMessage() for r in caplog.records if "infonoise_jax" in r.pathname]
  assert max(len(m) for m in ours) < 400
  assert "loss_by_log_sigma" not in caplog.text
  assert (workdir / "config.json").exists()
  ckpt = checkpointing.Checkpointer(str(workdir), 3)
  assert ckpt.latest_step() == 8
  ckpt.close()
  events = list((workdir / "tensorboard").glob("events.out.tfevents.*"))
  assert events
  acc = event_accumulator.EventAccumulator(str(events[0]), size_guidance={"images": 0})
  acc.Reload()
  tags = set(acc.Tags()["scalars"]) | set(acc.Tags()["tensors"])
  assert {"loss", "grad_norm", "learning_rate", "perf/steps_per_sec"} <= tags
  assert not any(t.startswith("loss_by_log_sigma/") for t in tags)  # a plot, not 32 charts
  assert "log_sigma" in set(acc.Tags()["histograms"]) | set(acc.Tags()["tensors"])
  # Our writer stores images as image summaries; TensorFlow's (clu path) as tensors.
  image_tags = set(acc.Tags()["images"]) | set(acc.Tags()["tensors"])
  assert {"schedule", "samples", "loss_by_log_sigma", "schedule_history"} <= image_tags
  assert any(t.startswith("_hparams_/") for t in acc.Tags()["tensors"])
  samples = np.load(workdir / "samples.npz")["samples"]
  assert samples.shape == (8, 8, 8, 1) and np.all(np.isfinite(samples))
  from PIL import Image

  grid = Image.open(next((workdir / "images").glob("samples_*.png")))
  assert grid.size[0] >= 8 * 3 and grid.size[1] >= 8

  # Running the finished run again says so and writes nothing.
  files = {p: p.stat().st_size for p in workdir.rglob("*") if p.is_file()}
  caplog.clear()
  with caplog.at_level(logging.INFO, logger="absl"):
    train.train_and_evaluate(_config(), str(workdir))
  assert "already finished" in caplog.text
  assert {p: p.stat().st_size for p in workdir.rglob("*") if p.is_file()} == files


def test_two_level_images_far_from_sigma_data_are_warned_about(caplog, tmp_path):
  """Binarized or bool images at +-1 have a std near 1 against edm.sigma_data 0.5; nothing
  pointed at data.scale=0.5, the binarized recipe."""
  from infonoise_jax.data import load_source

  bits = np.random.default_rng(0).random((64, 8, 8)) < 0.5  # a bool array: two levels
  np.save(tmp_path / "bits.npy", bits)
  cases = [
    ({"data.binarize": True}, True),  # digits at +-1: std 0.91
    ({"data.binarize": True, "data.scale": 0.5}, False),  # the recipe: std 0.46
    ({}, False),  # continuous digits
    ({"data.name": "images", "data.path": str(tmp_path / "bits.npy")}, True),  # std 1.0
    (
      {"data.name": "images", "data.path": str(tmp_path / "bits.npy"), "edm.sigma_data": 1.0},
      False,
    ),
  ]
  for overrides, warned in cases:
    config = _config(**overrides)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="absl"):
      train.warn_if_two_level_data_mismatches_sigma_data(config, load_source(config))
    said = [r.getMessage() for r in caplog.records if "two-level images" in r.getMessage()]
    assert bool(said) == warned, (overrides, said)
    if warned:  # the suggested scale gives the data the std edm.sigma_data assumes
      suggested = float(said[0].split("--config.data.scale=")[1].split()[0])
      config.data.scale = suggested
      std = float(np.std(load_source(config).array))
      assert std == pytest.approx(config.edm.sigma_data, rel=0.01)


def test_warns_when_a_step_setting_cannot_act_in_this_run(caplog):
  """The lr warm-up outlasting the run, and a device trace outside the steps trained, ended in
  silence (2026-12-07 probe): lr 1e-6 at the end, or no trace."""
  with caplog.at_level(logging.WARNING, logger="absl"):
    train.warn_if_settings_outlast_run(_config(**{"optim.warmup_steps": 8}), 0)  # 8 steps
    assert "optim.warmup_steps=8 >= train.num_steps=8" in caplog.text
    caplog.clear()
    train.warn_if_settings_outlast_run(_config(**{"train.trace_start": 8}), 0)
    assert "train.trace_start=8 is outside the steps this run trains (0 to 8)" in caplog.text
    caplog.clear()
    train.warn_if_settings_outlast_run(_config(**{"train.trace_start": 3}), 5)  # a resume past it
    assert "train.trace_start=3 is outside" in caplog.text
    caplog.clear()
    train.warn_if_settings_outlast_run(_config(**{"train.trace_start": 5}), 5)
    train.warn_if_settings_outlast_run(_config(**{"optim.warmup_steps": 7}), 0)
    assert caplog.text == ""


def test_warns_when_the_run_ends_before_the_schedule_adapts(caplog):
  with caplog.at_level(logging.WARNING, logger="absl"):
    train.warn_if_schedule_never_adapts(_config(**{"schedule.infonoise.warmup_steps": 8}))
    assert "schedule.infonoise.warmup_steps=8" in caplog.text
    caplog.clear()
    train.warn_if_schedule_never_adapts(_config(**{"schedule.infonoise.warmup_steps": 7}))
    train.warn_if_schedule_never_adapts(_config("lognormal"))
    assert caplog.text == ""
    train.warn_if_schedule_never_adapts(_config("vdmpp"))  # adaptive warm-up 100 > 8 steps
    assert "schedule.adaptive.warmup_steps=100" in caplog.text
    caplog.clear()
    # EDM2 reads no warm-up (its weight learns from step 0): it was told to lower one
    train.warn_if_schedule_never_adapts(_config("edm2"))
    assert caplog.text == ""


@pytest.mark.parametrize(
  "overrides, key",
  [
    ({"data.name": "no_such_data"}, "data.name"),
    ({"train.batch_size": 12}, "train.batch_size"),
    ({"schedule.name": "no_such_schedule"}, "schedule.name"),
    ({"model.name": "transformer"}, "model.name"),
    ({"sampler.grid": "infogrid", "schedule.name": "lognormal"}, "sampler.grid"),
    ({"edm.sigma_min": 100.0}, "edm.sigma_min"),
    ({"sampler.name": "rk4"}, "sampler.name"),
    ({"data.image_size": 3}, "data.image_size"),
    ({"data.scale": float("nan")}, "data.scale"),
    ({"data.num_examples": 0}, "data.num_examples"),
    ({"data.vocab": "ACGT"}, "data.vocab='ACGT': only data.name=dna | text reads it"),
    ({"data.val_fraction": 0.5}, "data.val_fraction=0.5: only data.name=dna | text"),
    ({"data.dim": 4}, "data.dim=4: only data.name=gaussian_mixture reads it"),
    ({"schedule.lognormal.p_std": float("nan")}, "schedule.lognormal.p_std"),
    ({"system.peak_tflops": -1.0}, "system.peak_tflops"),
    ({"train.max_steps_in_flight": -1}, "train.max_steps_in_flight"),
    ({"train.trace_steps": 0}, "train.trace_steps"),
    ({"fid.batch_size": 0}, "fid.batch_size"),  # was range()'s error at the first periodic FID
    ({"train.eval_every": -1}, "train.eval_every"),
    ({"train.eval_every": 2}, "train.eval_every: logs the domain metrics of token data"),
    ({"optim.eps": 0.0}, "optim.eps"),
    ({"optim.lr": float("inf")}, "optim.lr"),
    ({"edm.sigma_data": float("inf")}, "edm.sigma_data"),
    ({"schedule.infonoise.gate": "pinned", "schedule.infonoise.gate_pivot": 1e3}, "gate_pivot"),
    ({"model.hidden_dims": ("(64,x)",)}, "model.hidden_dims"),  # a typo'd tuple flag: a string
    ({"model.hidden_dims": (64.7, 32)}, "model.hidden_dims"),
    ({"model.channel_mult": (True, 2)}, "model.channel_mult"),
    # 2026-12-07 probe: these failed after compiling (or training), or not at all
    ({"train.profile_bins": 1}, "train.profile_bins: must be >= 2"),  # at the first log flush
    ({"sampler.rho": 1e-9}, "sampler.rho=1e-09 gives a Karras grid that overflows"),  # sampling
    ({"sampler.s_noise": float("inf")}, "sampler.s_noise must be a finite"),  # NaN samples
    ({"seed": 2**70}, "seed: must be an integer that fits in 64 bits"),  # OverflowError
    ({"seq_metrics.num_texts": -1}, "seq_metrics.num_texts"),  # logged all but one
    ({"optim.grad_clip": float("inf")}, "optim.grad_clip"),
    ({"schedule.infonoise.num_bins": 10**5}, r"num_bins = 100000 must be in \[2, 4096\]"),
    ({"schedule.name": "cosine", "schedule.cosine.shift": 1e6}, "schedule.cosine.shift=1e"),
    (
      {"data.name": "gaussian_mixture", "data.num_examples": 10**12},
      "data.num_examples=1000000000000 points of 16 dimensions need about",
    ),  # a numpy MemoryError traceback
    (
      {"model.name": "mlp", "model.hidden_dims": (10**5, 10**5)},
      r"this mlp has [0-9,]+ parameters, and its train state [^$]+ network \(model.hidden_dims\)",
    ),  # an out-of-memory error after the compile
  ],
)
def test_bad_config_fails_before_compiling_naming_the_key(tmp_path, overrides, key):
  with pytest.raises(ValueError, match=key.replace(".", r"\.")):
    train.train_and_evaluate(_config(**overrides), str(tmp_path / "bad"))
  assert not (tmp_path / "bad").exists()  # not even an empty workdir


def test_an_empty_attention_flag_is_told_how_to_turn_attention_off():
  """--config.model.attn_resolutions= (meant: no attention) is read as a string; the error
  gives '()', the value that turns attention off."""
  import ml_collections

  from infonoise_jax import validation

  given = ml_collections.ConfigDict({"model": {"attn_resolutions": ""}})  # as the flag gives it
  with pytest.raises(ValueError) as e:
    validation.check_whole_number_tuples(given, validation.default_config())
  assert "model.attn_resolutions" in str(e.value) and "or '()' for none" in str(e.value)
  off = ml_collections.ConfigDict({"model": {"attn_resolutions": ()}})
  validation.check_whole_number_tuples(off, validation.default_config())


def test_a_workdir_that_cannot_be_made_is_named_before_the_data_loads(tmp_path, monkeypatch):
  """--workdir=/proc/nope printed a bare '[Errno 2] No such file or directory' after the data
  had loaded."""
  from infonoise_jax import workdir as workdir_lib
  from infonoise_jax.data import sources

  monkeypatch.setattr(sources, "load_source", lambda *a, **k: pytest.fail("data loaded"))
  with pytest.raises(ValueError, match=r"--workdir=/proc/nope/run cannot be made: .* /proc does"):
    train.train_and_evaluate(_config(), "/proc/nope/run")
  workdir_lib.check_is_directory(str(tmp_path / "new" / "run"))  # makeable: passes
  assert os.listdir(tmp_path) == []  # and leaves nothing behind
  # A file on the path is named as a file (it was "its nearest existing folder <the file>
  # does not take new folders (Not a directory)").
  (tmp_path / "config.json").write_text("{}")
  with pytest.raises(ValueError, match=r"config\.json on its path is a file, not a folder"):
    workdir_lib.check_is_directory(str(tmp_path / "config.json" / "sub" / "run"))


@pytest.mark.parametrize(
  "typed, meant",
  [
    ("train.num_stpes", ["train.num_steps"]),  # letters swapped
    ("trian.num_steps", ["train.num_steps"]),  # in the section's name
    ("train.lr", ["optim.lr"]),  # the right name in another section
    ("train.bs", ["train.batch_size", "fid.batch_size"]),  # initials; the same section first
    ("train.learning_rate", ["optim.lr"]),  # spelled out: lr is its initials
    ("model.channels", ["model.model_channels"]),
    ("train.zzzz_qqqq", []),  # nothing near: no guess
  ],
)
def test_a_mistyped_key_is_matched_to_the_keys_a_user_meant(typed, meant):
  from infonoise_jax.validation import default_config, did_you_mean, flat_keys, nearest_keys

  known = flat_keys(default_config())
  assert typed not in known and set(meant) <= known
  assert nearest_keys(known, typed) == meant
  assert did_you_mean(known, typed) == (
    " Did you mean " + " or ".join(f'"{k}"' for k in meant) + "?" if meant else ""
  )


def test_an_unknown_key_in_a_config_file_names_the_closest_known_one():
  """The command line suggested the key meant; a key added in a config file got no hint."""
  from infonoise_jax.validation import check_keys

  config = _config()
  with config.unlocked():
    config.train.num_stpes = 10
  with pytest.raises(ValueError, match=r"\['train.num_stpes'\].*Did you mean \"train.num_steps\""):
    check_keys(config)
  with config.unlocked():
    config.train.zzzz_qqqq = 1  # nothing close: no hint for it
  with pytest.raises(ValueError) as e:
    check_keys(config)
  assert str(e.value).count("Did you mean") == 1


def test_an_indivisible_batch_names_both_fixes():
  """A new run can change its batch; a resumed one cannot, so the message names a device
  count that divides the batch too."""
  from infonoise_jax.validation import validate_config

  want = r"batch_size=16 \(or 8\); a resumed run .* divides 12 \(e.g. 6: on a GPU host "
  want += r"CUDA_VISIBLE_DEVICES=0,1,2,3,4,5, on a CPU host JAX_NUM_CPU_DEVICES=6\)"
  with pytest.raises(ValueError, match=want):
    validate_config(_config(**{"train.batch_size": 12}), num_devices=8)
  with pytest.raises(ValueError, match=r"batch_size=8; a resumed run .* divides 5 \(e.g. 5:"):
    validate_config(_config(**{"train.batch_size": 5}), num_devices=8)


def test_no_event_writer_fails_before_data_or_compile_naming_the_fix(tmp_path, monkeypatch):
  """Without tensorboardX and without TensorFlow (clu's writer) the run stops at the start,
  not after the data, the compile and a restore, and leaves the workdir as it was."""
  import importlib.util

  from infonoise_jax import writers

  real = importlib.util.find_spec
  monkeypatch.setattr(
    importlib.util,
    "find_spec",
    lambda name, *a, **k: None if name == "tensorboardX" else real(name, *a, **k),
  )
  monkeypatch.setattr(writers, "_import_clu_writers", lambda: None)
  monkeypatch.setattr(train, "load_source", lambda c: pytest.fail("data loaded before the check"))
  with pytest.raises(ImportError, match=r"pip install tensorboardX"):
    train.train_and_evaluate(_config(), str(tmp_path / "nowriter"))
  assert not (tmp_path / "nowriter").exists() or not any((tmp_path / "nowriter").iterdir())


def test_a_runs_config_json_as_config_trains_that_run_again(tmp_path):
  """`--config=<run>/config.json` (read by configs/run_json.py) is the run's config: a new
  workdir trained from it ends in the same state, and overrides apply on top."""
  import subprocess

  train.train_and_evaluate(_config(**{"train.num_steps": 4}), str(tmp_path / "a"))
  cmd = [sys.executable, "-m", "infonoise_jax.main", f"--config={tmp_path / 'a' / 'config.json'}"]
  cmd += [f"--workdir={tmp_path / 'b'}", "--config.train.keep_checkpoints=5"]
  result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  original = json.loads((tmp_path / "a" / "config.json").read_text())
  written = json.loads((tmp_path / "b" / "config.json").read_text())
  assert written["train"].pop("keep_checkpoints") == 5 != original["train"].pop("keep_checkpoints")
  assert written == original
  # the same run (this process compiles with the test session's settings, the command with
  # its own: equal to float rounding; two commands give equal bits)
  _assert_trees_equal(
    checkpointing.read_arrays(str(tmp_path / "b"), 4),
    checkpointing.read_arrays(str(tmp_path / "a"), 4),
    rtol=1e-3,
    atol=1e-7,
  )


def test_unknown_config_key_is_rejected(tmp_path):
  config = _config()
  config.unlock()
  config.train.num_stpes = 3
  with pytest.raises(ValueError, match="num_stpes"):
    train.train_and_evaluate(config, str(tmp_path / "typo"))


@pytest.mark.parametrize(
  "args, says",
  [
    (
      ["--config.train.num_stpes=3"],
      '--config.train.num_stpes: no such config key. Did you mean "train.num_steps"?',
    ),
    (
      ["--config.trian.num_steps=3"],
      '--config.trian.num_steps: no such config key. Did you mean "train.num_steps"?',
    ),
    (
      ["--config.train.learning_rate=1e-3"],
      '--config.train.learning_rate: no such config key. Did you mean "optim.lr"?',
    ),
    (["--config.train.num_steps=abc"], "--config.train.num_steps=abc"),
    (["--config=configs/default.py:bogus"], "Unknown config variant 'bogus'"),
    (["--config=configs/no_such.py"], "Config file 'configs/no_such.py' not found"),
    (["--config=configs/__init__.py"], "the file defines no get_config()"),
    (
      ["--config=configs/test.py", "--config=configs/default.py"],
      "--config is given 2 times: give one config file",
    ),
    (["--config=runs/none/config.json"], "--config=runs/none/config.json: not found"),
    (["--no_such_flag=1"], "Unknown command line flag 'no_such_flag'"),
    (["--workdir="], "--workdir is empty"),
    (
      ["--config.model.hidden_dims=(256,256)", "--config.model.hidden_dims=(128,128)"],
      "--config.model.hidden_dims is given 2 times: give each config key once",
    ),
  ],
)
def test_a_bad_command_line_is_one_error_line_naming_the_flag(tmp_path, args, says):
  """Mistakes made while typing the command end in one `error:` line like every user error
  (cli.py), before anything is compiled or written; --debug shows the traceback."""
  import subprocess
  import sys

  cmd = [sys.executable, "-m", "infonoise_jax.main"]
  if not any(a.startswith("--config=") for a in args):
    cmd.append("--config=configs/test.py")
  cmd += [f"--workdir={tmp_path / 'run'}", *args]
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  env.pop("INFONOISE_DEBUG", None)
  result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
  assert result.returncode == 1
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and says in errors[0], result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "run").exists()
  loud = subprocess.run(
    [*cmd, "--debug"], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env
  )
  assert loud.returncode != 0 and "Traceback" in loud.stderr


def test_mock_cifar10_end_to_end_with_the_unet(tmp_path):
  import tensorflow_datasets as tfds

  config = _config(
    **{
      "data.name": "tfds:cifar10",
      "model.name": "unet",
      "model.model_channels": 16,
      "model.channel_mult": (1, 2),
      "model.num_blocks": 1,
      "model.attn_resolutions": (16,),
      "train.num_steps": 2,
      "train.batch_size": 8,
      "train.num_samples": 8,
      "sampler.num_steps": 2,
    }
  )
  with tfds.testing.mock_data(num_examples=16, policy=tfds.testing.MockPolicy.USE_CODE):
    state = train.train_and_evaluate(config, str(tmp_path / "c10"))
  assert int(state.step) == 2
  samples = np.load(tmp_path / "c10" / "samples.npz")["samples"]
  assert samples.shape == (8, 32, 32, 3) and np.all(np.isfinite(samples))


def _scalars(workdir: pathlib.Path, tags=("loss", "grad_norm")) -> dict:
  """{tag: [(step, value), ...]} of the run's TensorBoard scalars (either writer's format)."""
  import sys

  sys.path.insert(0, str(ROOT / "experiments" / "benchmarks"))
  import trainer_bench

  s = trainer_bench.read_scalars(str(workdir / "tensorboard"))
  return {tag: s[tag] for tag in tags}


def test_trace_of_chosen_steps_lands_where_tensorboard_reads_profiles(tmp_path, caplog):
  """train.trace_start / trace_steps: a jax.profiler trace of those steps under
  <workdir>/tensorboard/plugins/profile/<run>/, started and ended once, the run unchanged."""
  config = _config(**{"train.num_steps": 6, "train.trace_start": 2, "train.trace_steps": 2})
  with caplog.at_level(logging.INFO, logger="absl"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  traces = list((tmp_path / "run" / "tensorboard" / "plugins" / "profile").glob("*/*.xplane.pb"))
  assert len(traces) == 1 and traces[0].stat().st_size > 0
  assert _python_frames(traces[0]) == []  # train.trace_python is off: no Python calls traced
  assert caplog.text.count("Tracing steps 3..4") == 1
  sys.path.insert(0, str(ROOT / "experiments" / "benchmarks"))
  import trace_gaps

  with pytest.raises(SystemExit, match="no GPU kernels"):  # trace_gaps.py reads it (CPU: none)
    trace_gaps.main([str(tmp_path / "run" / "tensorboard")])
  assert checkpointing.Checkpointer(str(tmp_path / "run"), 3).latest_step() == 6


def _python_frames(xplane) -> list[str]:
  """Names of the Python-call events ('$file.py:line name') in the trace's JSON copy."""
  (trace_json,) = xplane.parent.glob("*.trace.json.gz")
  events = json.loads(gzip.decompress(trace_json.read_bytes()))["traceEvents"]
  assert any(e.get("ph") == "X" and e.get("dur", 0) > 0 for e in events)
  return [e["name"] for e in events if e.get("ph") == "X" and e["name"].startswith("$")]


def test_trace_python_adds_the_python_calls(tmp_path):
  config = _config(**{"train.num_steps": 4, "train.trace_start": 2, "train.trace_steps": 1})
  config.train.trace_python = True
  train.train_and_evaluate(config, str(tmp_path / "run"))
  (xplane,) = (tmp_path / "run" / "tensorboard" / "plugins" / "profile").glob("*/*.xplane.pb")
  assert any("train.py" in name for name in _python_frames(xplane))


def test_a_trace_that_cannot_start_warns_and_the_run_goes_on(tmp_path, caplog, monkeypatch):
  def refuse(logdir, profiler_options=None):
    raise RuntimeError("profiler already in use")

  monkeypatch.setattr(jax.profiler, "start_trace", refuse)
  config = _config(**{"train.num_steps": 4, "train.trace_start": 1, "train.trace_steps": 2})
  with caplog.at_level(logging.INFO, logger="absl"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert "Not tracing steps 2..3: profiler already in use" in caplog.text
  assert checkpointing.Checkpointer(str(tmp_path / "run"), 3).latest_step() == 4


@pytest.mark.parametrize("devices, limit, bound", [(8, 32, 8), (8, 0, 8), (8, 3, 3), (1, 32, 32)])
def test_several_cpu_devices_run_at_most_eight_steps_ahead(devices, limit, bound):
  """XLA's CPU collectives abort with a deep queue of multi-device steps (train.steps_in_flight):
  on several CPU devices the bound is at most 8, unbounded included; one device keeps it."""
  import types

  from infonoise_jax.mesh import make_mesh

  config = _config(**{"train.max_steps_in_flight": limit})
  run = types.SimpleNamespace(config=config, mesh=make_mesh(jax.devices()[:devices]))
  assert train.steps_in_flight(run) == bound


@pytest.fixture(scope="module")
def bounded(tmp_path_factory):
  """configs/test.py trained with train.max_steps_in_flight 0, 1 and 3, every wait of the
  bound recorded: {limit: (workdir, final state on the host, waits)}, each wait as (step
  waited for, last step dispatched, ready after the wait). Shared by the tests that the bound
  changes no result and that the loop waits for the step `limit` behind; the step store kept
  off, as in `trained`."""
  from infonoise_jax import step_executables

  runs, base = {}, train._InFlight  # each limit's recorder derives from the real class
  with pytest.MonkeyPatch.context() as m:
    m.setattr(step_executables, "folder", lambda: None)
    for limit in (0, 1, 3):
      waits = []

      class Recording(base):
        def add(self, step, marker):
          self.dispatched = step
          super().add(step, marker)

        def _wait(self, step, marker, waits=waits):
          super()._wait(step, marker)
          waits.append((step, self.dispatched, marker.is_ready()))

      m.setattr(train, "_InFlight", Recording)
      workdir = tmp_path_factory.mktemp(f"limit{limit}")
      state = train.train_and_evaluate(
        _config(**{"train.max_steps_in_flight": limit}), str(workdir)
      )
      runs[limit] = workdir, jax.device_get(state), waits
  return runs


def test_the_run_ahead_bound_changes_no_result(bounded, resumed, tmp_path):
  """Bounded or not, the run trains the same steps: final state, checkpoints and logged
  metrics bitwise equal; the periodic checkpoint holds the state of its own step, as a run
  that stopped there saves it."""
  runs = {limit: (workdir, state) for limit, (workdir, state, _) in bounded.items()}
  stopped = resumed["half"]  # configs/test.py trained straight to step 4 and stopped there
  run = train.Run(_config(), str(tmp_path / "unused"))
  for limit, (workdir, state) in runs.items():
    _assert_trees_equal(state, runs[0][1])
    assert _scalars(workdir) == _scalars(runs[0][0]), limit
    ckpt = checkpointing.Checkpointer(str(workdir), 3)
    assert ckpt.all_steps() == [4, 8]
    at_4, _ = ckpt.restore(run.abstract_state, 4)
    ckpt.close()
    _assert_trees_equal(jax.device_get(at_4), stopped)


@pytest.mark.parametrize("limit", [0, 1, 3])
def test_the_loop_waits_for_the_step_limit_behind(bounded, limit):
  _, _, waits = bounded[limit]  # (step waited for, last step dispatched, ready after the wait)
  # Each dispatch of step i waits for step i - limit: at most `limit` steps unfinished.
  expected = [(i - limit, i, True) for i in range(limit + 1, 9)] if limit else []
  assert waits == expected


def test_in_flight_bound_unit():
  waited = []

  class Fake(train._InFlight):
    def _wait(self, step, marker):
      waited.append((step, marker))

  bound = Fake(2)
  for i in range(1, 6):
    bound.add(i, f"m{i}")
  assert waited == [(1, "m1"), (2, "m2"), (3, "m3")]
  unbounded = Fake(0)
  for i in range(1, 6):
    unbounded.add(i, i)
  assert waited == [(1, "m1"), (2, "m2"), (3, "m3")]


@pytest.fixture
def no_persistent_cache():
  """JAX's persistent compilation cache off for the test, back to before after it. The store
  keeps only steps compiled in the process (`cache_hits_on_this_thread`); a cache folder that
  an earlier process filled with the same program (a developer's ~/.cache, a CI machine's
  home kept between runs) would make the step a cache hit and leave the store empty."""
  from jax.experimental.compilation_cache import compilation_cache

  before = jax.config.jax_enable_compilation_cache
  jax.config.update("jax_enable_compilation_cache", False)
  compilation_cache.reset_cache()  # jax decides once per process whether the cache is used
  yield
  jax.config.update("jax_enable_compilation_cache", before)
  compilation_cache.reset_cache()


def test_stored_step_is_loaded_not_traced_and_trains_the_same(
  tmp_path, monkeypatch, no_persistent_cache
):
  """With the step store on (step_executables), a second run of the same config neither
  traces nor compiles the step, and its state is bitwise the first's; a changed config
  misses the store and traces again. One device of the eight: the stored executable must
  load onto the run's own mesh, not onto every device."""
  from infonoise_jax import step_executables

  store = tmp_path / "store"
  monkeypatch.setattr(step_executables, "folder", lambda: str(store))
  devices = jax.devices()[:1]

  def train_in(name, config):
    def run():
      out.append(jax.device_get(train.train_and_evaluate(config, str(tmp_path / name), devices)))

    out = []
    return _count_compiles(run), out[0]

  # A learning rate no other test uses: no other test's step is the same program.
  unique = {"optim.lr": 3.217e-4}
  first_compiles, first = train_in("first", _config(**unique))
  assert first_compiles["jit(train_step)"] == ["compile_ahead"]
  assert len(list(store.glob("*.pkl"))) == 1
  second_compiles, second = train_in("second", _config(**unique))
  assert "jit(train_step)" not in second_compiles  # loaded from the store
  _assert_trees_equal(first, second)
  changed, _ = train_in("changed", _config(**{"optim.lr": 1.234e-4}))
  assert changed["jit(train_step)"] == ["compile_ahead"]
  assert len(list(store.glob("*.pkl"))) == 2


def test_resume_with_more_steps_loads_the_stored_step_and_matches_a_straight_run(
  tmp_path, monkeypatch, no_persistent_cache
):
  """A run stopped at step 4 and resumed to 8 (a different train.num_steps, left out of the
  key) calls the stored executable on the restored state: no compile of the step, and the
  state equals a straight 8-step run's bitwise."""
  from infonoise_jax import step_executables

  monkeypatch.setattr(step_executables, "folder", lambda: str(tmp_path / "store"))
  unique = {"optim.lr": 2.345e-4}  # compiled here (see the test above)
  straight = jax.device_get(train.train_and_evaluate(_config(**unique), str(tmp_path / "straight")))
  workdir = str(tmp_path / "resumed")
  train.train_and_evaluate(_config(**unique, **{"train.num_steps": 4}), workdir)
  out = []
  compiles = _count_compiles(
    lambda: out.append(jax.device_get(train.train_and_evaluate(_config(**unique), workdir)))
  )
  assert "jit(train_step)" not in compiles
  assert int(out[0].step) == 8
  _assert_trees_equal(straight, out[0])


def test_unreadable_stored_step_is_ignored_with_a_warning(tmp_path, caplog):
  from infonoise_jax import step_executables

  (tmp_path / "k.pkl").write_bytes(b"torn write")
  with caplog.at_level(logging.WARNING):
    assert step_executables.load(str(tmp_path), "k", jax.devices()[:1]) is None
  assert "Ignoring the stored train step" in caplog.text
  assert step_executables.load(str(tmp_path), "absent", jax.devices()[:1]) is None


def test_step_key_follows_config_shapes_and_code(tmp_path, monkeypatch):
  from infonoise_jax import step_executables

  run = train.Run(_config(), str(tmp_path))
  key = step_executables.step_key(run.config, run.abstract_state, run.abstract_batch)
  assert key == step_executables.step_key(_config(), run.abstract_state, run.abstract_batch)
  other = _config(**{"optim.lr": 1e-4})
  assert key != step_executables.step_key(other, run.abstract_state, run.abstract_batch)
  longer = _config(**{"train.num_steps": 7})  # a resume with more steps finds its step
  assert key == step_executables.step_key(longer, run.abstract_state, run.abstract_batch)
  wider = jax.ShapeDtypeStruct(
    (2 * run.abstract_batch.shape[0], *run.abstract_batch.shape[1:]),
    run.abstract_batch.dtype,
    sharding=run.abstract_batch.sharding,
  )
  assert key != step_executables.step_key(run.config, run.abstract_state, wider)
  monkeypatch.setattr(step_executables, "package_digest", lambda: "edited code")
  assert key != step_executables.step_key(run.config, run.abstract_state, run.abstract_batch)


# A changed value for each key step_executables leaves out of its key (sections: some leaves).
_LOOP_ONLY_CHANGES = {
  "train.num_steps": 9,
  "train.log_every": 3,
  "train.checkpoint_every": 5,
  "train.keep_checkpoints": 1,
  "train.max_steps_in_flight": 0,
  "train.sample_every": 4,
  "train.num_samples": 8,
  "train.fid_every": 0,
  "train.fid_num_samples": 128,
  "train.eval_every": 2,
  "train.eval_num_samples": 16,
  "train.trace_start": 3,
  "train.trace_steps": 2,
  "train.trace_python": True,
  "data.tfds_data_dir": "/elsewhere/tfds",
  "data.local_dir": "/elsewhere/fashion",
  "data.path": "/elsewhere/file",
  "data.vocab": "xyz",
  "data.unknown_policy": "replace",
  "data.num_workers": 0,
  "seq_metrics.lm_order": 3,
  "sampler.num_steps": 7,
  "sampler.rho": 5.0,
  "sampler.s_churn": 1.0,
  "fid.batch_size": 4,
  "system.compilation_cache_min_secs": 2.0,
  "system.store_train_step": False,
  "system.peak_tflops": 10.0,
}


def test_keys_left_out_of_the_step_key_do_not_change_the_step(tmp_path, monkeypatch):
  """step_executables.LOOP_ONLY may only list keys the train step does not read: with all of
  the changes below the step lowers to the same program. Every non-section entry of
  LOOP_ONLY must be changed here, so a new one cannot slip in untested."""
  from infonoise_jax import step_executables, validation

  # train.eval_every is for token data only; these runs are on images (data.path is read by
  # own images only), so its validation lets images through here: only the step is compared
  monkeypatch.setattr(validation, "TOKEN_NAMES", (*validation.TOKEN_NAMES, "images"))

  for key in step_executables.LOOP_ONLY:
    if key.endswith("."):
      assert any(k.startswith(key) for k in _LOOP_ONLY_CHANGES), key
    else:
      assert key in _LOOP_ONLY_CHANGES, key
  # data.path is read by own images only: both runs train on 8x8 arrays, from two files
  pixels = np.random.default_rng(0).integers(0, 256, (32, 8, 8, 1), dtype=np.uint8)
  for name in ("a.npy", "b.npy"):
    np.save(tmp_path / name, pixels)
  images = {"data.name": "images", "data.path": str(tmp_path / "a.npy")}
  changes = {**_LOOP_ONLY_CHANGES, "data.path": str(tmp_path / "b.npy")}
  base = train.Run(_config(**images), str(tmp_path))
  changed = train.Run(_config(**{**images, **changes}), str(tmp_path))
  for name, value in changes.items():  # the changes took
    assert changed.config[name.split(".")[0]][name.split(".")[1]] == value
  lower = lambda r: r.train_step.lower(r.abstract_state, r.abstract_batch).as_text()
  assert lower(base) == lower(changed)
  # The comparison can see a key the step does read:
  assert lower(base) != lower(
    train.Run(_config(**images, **{"train.profile_bins": 16}), str(tmp_path))
  )
  key = lambda r: step_executables.step_key(r.config, r.abstract_state, r.abstract_batch)
  assert key(base) == key(changed)


def test_periodic_saves_start_on_the_save_thread_final_save_on_the_loop(tmp_path, monkeypatch):
  """Orbax's blocking part of a periodic save runs on the checkpointer's thread (the loop
  keeps dispatching steps); the final save is made by the loop itself before it returns."""
  import threading

  threads = {}
  save = checkpointing.Checkpointer._save

  def spy(self, step, *args):
    threads[step] = threading.current_thread().name
    return save(self, step, *args)

  monkeypatch.setattr(checkpointing.Checkpointer, "_save", spy)
  config = _config(**{"train.checkpoint_every": 3, "train.num_steps": 8})
  train.train_and_evaluate(config, str(tmp_path / "run"))
  assert set(threads) == {3, 6, 8}
  assert threads[3].startswith("checkpoint_save") and threads[6].startswith("checkpoint_save")
  assert threads[8] == threading.main_thread().name
  assert checkpointing.saved_steps(str(tmp_path / "run"))[-1] == 8


def test_a_train_state_larger_than_a_devices_memory_is_refused_naming_the_size_keys():
  """Devices that report their memory (GPU, TPU) are held one by one against the state;
  a state that fits passes."""
  from typing import NamedTuple

  class Device:
    device_kind, process_index, platform = "NVIDIA H100 80GB HBM3", 0, "gpu"

    def __init__(self, limit):
      self.limit = limit

    def memory_stats(self):
      return {"bytes_limit": self.limit}

  class State(NamedTuple):  # what check_state_fits reads: leaves, and .params
    params: dict
    moments: list

  n = 1000
  leaf = jax.ShapeDtypeStruct((n,), np.float32)
  state = State({"w": leaf}, [leaf] * 3)  # 4 x 4,000 bytes
  config = _config(**{"model.name": "transformer"})
  train.check_state_fits(config, state, [Device(16_000)] * 8)  # fits exactly
  with pytest.raises(ValueError) as e:
    train.check_state_fits(config, state, [Device(15_999)] * 8)
  said = str(e.value)
  assert "1,000 parameters" in said and "H100" in said and "model.width, model.depth" in said
  # another host's devices are not asked (on a pod the mesh holds every host's)
  remote = Device(1)
  remote.process_index = 1
  train.check_state_fits(config, state, [remote, Device(16_000)])
  # an accelerator that reports no memory is not checked
  silent = Device(0)
  train.check_state_fits(config, state, [silent])
