"""The comparison harness on CPU: tiny config, two schedules, two seeds side by side.

Checks the vmapped multi-run step against the single-run trainer, the curves / table /
speedup outputs, and that a resumed harness appends only the missing evaluations.
"""

import contextlib
import itertools
import json
import os
import re
import sys
import types
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from infonoise_jax import multirun, train
from infonoise_jax.data.sources import SAMPLES_DATA_KEY, same_data
from infonoise_jax.data.tokens import TokenEncoding
from infonoise_jax.models import unet_layers
from infonoise_jax.validation import load_config_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "experiments"))

import compare_schedules  # noqa: E402
import fid_of_samples  # noqa: E402

TEST_CONFIG = os.path.join(ROOT, "configs", "test.py")


@pytest.fixture(scope="module")
def side_by_side():
  """configs/test.py:infonoise with seeds 3 and 5: five steps of the vmapped multi-run step
  and five of each seed's single-run trainer (one device), one compile of each shared by the
  tests that compare them. The multi-run side: its state and bad flags after 4 steps, and
  its IntervalStats read before any step and after steps 2 and 5; the single side, per seed:
  the state after 4 steps and each step's loss and gradient norm. (The steps donate their
  state: what is kept of step 4 is a copy.)"""
  seeds = [3, 5]
  mr = multirun.MultiRun(load_config_file(TEST_CONFIG, "infonoise"), seeds)
  state, bad = mr.init()
  stats = multirun.IntervalStats()
  multi = {"empty": stats.read(), "reads": []}  # nothing added yet
  for step in range(5):
    state, bad, watched = mr.train_step(state, mr.batch(step), bad)
    stats.add(watched)
    if step == 3:
      multi["states"] = [mr.run_state(state, r) for r in range(len(seeds))]  # new arrays
      multi["bad"] = np.asarray(bad)
    if step in (1, 4):
      multi["reads"].append(stats.read())
  single = []
  for seed in seeds:
    c = load_config_file(TEST_CONFIG, "infonoise")
    c.seed = seed
    run = train.Run(c, "/tmp/unused", devices=jax.devices()[:1])
    s, loss, norm = run.init_fn(), [], []
    for step in range(5):
      s, m = run.train_step(s, run.global_batch(run.pipeline.batch(step)))
      loss.append(float(m["loss"]))
      norm.append(float(m["grad_norm"]))
      if step == 3:
        at_4 = jax.device_get({"params": s.params, "m_K": s.schedule_state["m_K"]})
    single.append({**at_4, "loss": loss, "grad_norm": norm})
  return multi, single


def test_vmapped_runs_match_single_runs(side_by_side):
  multi, singles = side_by_side  # 4 steps of each, seeds 3 and 5
  assert not multi["bad"].any()
  for mine, single in zip(multi["states"], singles, strict=True):
    for a, b in zip(jax.tree.leaves(mine.params), jax.tree.leaves(single["params"]), strict=True):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-6)
    np.testing.assert_allclose(
      np.asarray(mine.schedule_state["m_K"]), np.asarray(single["m_K"]), rtol=1e-4
    )


def test_interval_stats_are_each_single_runs_step_metrics_between_reads(side_by_side):
  """The harness's per-evaluation training loss and gradient norm: means (and the largest
  norm) of what the single-run trainer's step reports, over the steps between two reads."""
  multi, singles = side_by_side  # stats read after steps 2 and 5
  assert multi["empty"] == []  # nothing added yet
  got = multi["reads"]
  for r, single in enumerate(singles):
    loss, norm = single["loss"], single["grad_norm"]
    first, second = got[0][r], got[1][r]
    assert (first["train_steps"], second["train_steps"]) == (2, 3)
    assert first["train_loss"] == pytest.approx(np.mean(loss[:2]), rel=1e-4)
    assert second["train_loss"] == pytest.approx(np.mean(loss[2:]), rel=1e-4)
    assert second["grad_norm_mean"] == pytest.approx(np.mean(norm[2:]), rel=1e-3)
    assert second["grad_norm_max"] == pytest.approx(max(norm[2:]), rel=1e-3)
  assert loss[0] != loss[1]  # the steps differ, so the means above are not one value


def test_check_finite_names_the_seed_and_steps():
  with pytest.raises(FloatingPointError, match=r"steps 11..20 for seeds \[7\]"):
    multirun.check_finite(np.array([False, True]), [3, 7], (11, 20))


def _args(out):
  return [
    f"--out={out}",
    f"--config={TEST_CONFIG}",
    "--steps=4",
    "--eval_every=2",
    "--num_samples=32",
    "--seeds=0,1",
    "--data=continuous",
    "--arms=lognormal,infonoise",
  ]


def _records(out, kind):
  with open(os.path.join(out, "results.jsonl")) as f:
    recs = [json.loads(line) for line in f]
  return [r for r in recs if r["kind"] == kind]


def _evals(out):
  return _records(out, "eval")


def test_harness_writes_curves_table_speedup_and_resumes_without_duplicates(tmp_path):
  out = str(tmp_path)
  compare_schedules.main(_args(out))
  evals = _evals(out)
  # 2 arms x 2 seeds x (evals at 2 and 4, plus the resampled one at 4)
  assert len(evals) == 12
  keys = [(r["arm"], r["seed"], r["step"], r["resample"]) for r in evals]
  assert len(set(keys)) == len(keys)
  assert {r["conv_wgrad"] for r in evals} == {None}  # an MLP: no convolutions
  assert unet_layers.conv2d is unet_layers._plain_conv2d
  assert all(np.isfinite(r["fd"]) and r["fd"] > 0 for r in evals)
  # each evaluation: the run's training loss and gradient norm over the 2 steps since the last
  assert all(r["train_steps"] == 2 and np.isfinite(r["train_loss"]) for r in evals)
  assert all(0 < r["grad_norm_mean"] <= r["grad_norm_max"] for r in evals)
  hashes = {r["arm"]: r["config_hash"] for r in evals}
  assert hashes["lognormal"] != hashes["infonoise"]
  assert evals[0]["config"]["schedule"]["name"] in ("lognormal", "infonoise")
  for name in ("summary.md", "curves_continuous.png", "speedup_continuous.png"):
    assert os.path.getsize(os.path.join(out, name)) > 0
  summary = open(os.path.join(out, "summary.md")).read()
  assert "| lognormal | 2 |" in summary and "Speedup to the final value of `lognormal`" in summary

  # an interrupted run: drop the last three evaluations, rerun the same command
  path = os.path.join(out, "results.jsonl")
  lines = open(path).read().splitlines()
  with open(path, "w") as f:
    f.write("\n".join(lines[:-3]) + "\n")
  compare_schedules.main(_args(out))
  again = _evals(out)
  keys = [(r["arm"], r["seed"], r["step"], r["resample"]) for r in again]
  assert len(again) == 12 and len(set(keys)) == 12
  compare_schedules.main(_args(out))  # complete: nothing appended
  assert len(_evals(out)) == 12


def test_conv_wgrad_auto_takes_taps_only_for_a_unet_with_seeds_sharing_a_gpu_step(
  tmp_path, monkeypatch
):
  unet = load_config_file(os.path.join(ROOT, "configs", "default.py"), "fashion")
  mlp = load_config_file(TEST_CONFIG)
  assert unet.model.name == "unet" and mlp.model.name != "unet"

  def chosen(config, *flags, backend="gpu"):
    monkeypatch.setattr(compare_schedules.jax, "default_backend", lambda: backend)
    args = compare_schedules.parse([f"--out={tmp_path}", *flags])
    return compare_schedules.conv_wgrad(args, config)

  assert chosen(unet, "--seeds=0,1,2") == "taps"
  assert chosen(unet, "--seeds=0,1,2", backend="cpu") == "conv"  # measured no faster there
  assert chosen(unet, "--seeds=4") == "conv"
  assert chosen(unet, "--seeds=0,1", "--conv_wgrad=conv") == "conv"
  assert chosen(unet, "--seeds=4", "--conv_wgrad=taps", backend="cpu") == "taps"
  assert chosen(mlp, "--seeds=0,1,2", "--conv_wgrad=taps") is None


@pytest.mark.parametrize(
  "outer, each, flag", [(None, "0.300", ["--workers=3"]), ("0.45", "0.150", ["--workers", "3"])]
)
def test_workers_split_the_harness_memory_share(tmp_path, monkeypatch, outer, each, flag):
  """Each of --workers processes gets an equal part of the harness's share of the card: 0.9
  alone, or the XLA_PYTHON_CLIENT_MEM_FRACTION it was started with (harnesses side by side)."""
  started = []

  class FakeProcess:
    def __init__(self, argv, env):
      started.append((argv, env["XLA_PYTHON_CLIENT_MEM_FRACTION"]))

    def wait(self):
      return 0

  monkeypatch.setattr(compare_schedules.subprocess, "Popen", FakeProcess)
  if outer is None:
    monkeypatch.delenv("XLA_PYTHON_CLIENT_MEM_FRACTION", raising=False)
  else:
    monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", outer)
  monkeypatch.setattr(sys, "argv", ["compare_schedules.py", *flag, f"--out={tmp_path}"])
  compare_schedules.spawn_workers(compare_schedules.parse(sys.argv[1:]))
  assert [frac for _, frac in started] == [each] * 3
  assert [argv[2:] for argv, _ in started] == [
    [f"--out={tmp_path}", f"--shard={i}/3"] for i in range(3)
  ]
  started.clear()
  monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "half")
  with pytest.raises(SystemExit, match="XLA_PYTHON_CLIENT_MEM_FRACTION='half' is not a number"):
    compare_schedules.spawn_workers(compare_schedules.parse(sys.argv[1:]))
  assert not started


def test_worker_gpus_deal_the_workers_out_over_cards(tmp_path, monkeypatch, capsys):
  """--worker_gpus puts worker i on card ids[i % len(ids)]; the memory share is split only
  between the workers of one card; the flag does not reach the workers; bad lists stop in
  parse, before anything starts."""
  started = []

  class FakeProcess:
    def __init__(self, argv, env):
      started.append((argv, env.get("CUDA_VISIBLE_DEVICES"), env["XLA_PYTHON_CLIENT_MEM_FRACTION"]))

    def wait(self):
      return 0

  monkeypatch.setattr(compare_schedules.subprocess, "Popen", FakeProcess)
  monkeypatch.delenv("XLA_PYTHON_CLIENT_MEM_FRACTION", raising=False)
  monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
  flags = ["--workers=3", "--worker_gpus", "2,3", f"--out={tmp_path}"]
  monkeypatch.setattr(sys, "argv", ["compare_schedules.py", *flags])
  compare_schedules.spawn_workers(compare_schedules.parse(flags))
  on = [(gpu, frac) for _, gpu, frac in started]
  assert on == [("2", "0.450"), ("3", "0.900"), ("2", "0.450")]
  assert [argv[2:] for argv, _, _ in started] == [
    [f"--out={tmp_path}", f"--shard={i}/3"] for i in range(3)
  ]
  started.clear()
  flags = ["--workers=2", "--worker_gpus=0,1", f"--out={tmp_path}"]
  monkeypatch.setattr(sys, "argv", ["compare_schedules.py", *flags])
  compare_schedules.spawn_workers(compare_schedules.parse(flags))
  assert [(gpu, frac) for _, gpu, frac in started] == [("0", "0.900"), ("1", "0.900")]
  for bad, says in [
    (["--worker_gpus=0,1"], "needs --workers >= 2"),
    (["--workers=2", "--worker_gpus=0,gpu1"], "non-negative GPU ids"),
    (["--workers=2", "--worker_gpus=0,1,2"], "names 3 GPUs for 2 workers"),
  ]:
    with pytest.raises(SystemExit):
      compare_schedules.parse([*bad, f"--out={tmp_path}"])
    assert says in capsys.readouterr().err


def test_time_limit_estimates_the_next_stretch_without_the_compile():
  """The first stretch of a call holds the compile: it is the estimate only until a second is
  timed; after that the longest of the others (a save's longer stretch counts)."""
  assert compare_schedules.next_stretch([80.0]) == 80.0
  assert compare_schedules.next_stretch([80.0, 42.0]) == 42.0
  assert compare_schedules.next_stretch([80.0, 42.0, 58.0, 41.0]) == 58.0


def test_compile_seconds_counts_xla_compiles_inside_the_block_only():
  """compile_seconds adds up the seconds JAX reports for XLA compiles (the event the harness
  subtracts from a stretch): a new function's first call adds to it, a second call of the
  compiled function adds nothing, and a compile after the block is not counted."""
  with compare_schedules.compile_seconds() as compiled:
    f = jax.jit(lambda x: jnp.tanh(x) * 3.0 + x)  # a new function: compiles on its first call
    f(jnp.ones(7)).block_until_ready()
    first = compiled[0]
    f(jnp.ones(7)).block_until_ready()
    assert compiled[0] == first
  assert first > 0
  jax.jit(lambda x: x - 5.0)(jnp.ones(3)).block_until_ready()
  assert compiled[0] == first


@contextlib.contextmanager
def _compiles_in_first_stretch(seconds: float):
  """A stand-in for compile_seconds: nothing compiled when the loop starts, `seconds` by the
  end of the first stretch, nothing after."""
  reads = itertools.chain([0.0], itertools.repeat(seconds))
  yield _Reads(reads)


class _Reads:
  """Reads as compile_seconds' list does (`compiled[0]`), each read the next value."""

  def __init__(self, reads):
    self.reads = reads

  def __getitem__(self, i):
    return next(self.reads)


def test_time_limit_leaves_the_first_stretchs_compiles_out(tmp_path, monkeypatch, capsys):
  """The first stretch of a call holds the compiles, which no later stretch repeats (on an
  H100 without a cache, binarized Fashion's first stretch took 259 s, later ones 115-130 s):
  --time_limit leaves them out of its estimate, so a call goes on where the whole stretch
  would have stopped it.
  Fake clock as below (10 s a reading; the first stretch reads 40 s, the decision at 1060):
  with a deadline of 1085, 0 s of compile stops at step 2 (1060 + 40 past it), 30 s does not
  (1060 + 10)."""
  for compiled, stops in [(0.0, True), (30.0, False)]:
    out = tmp_path / f"c{compiled:.0f}"
    part = [*_args(str(out)), "--arms=infonoise", f"--state_dir={out / 'state'}"]
    clock = itertools.count(1000, 10)
    monkeypatch.setattr(compare_schedules, "time", types.SimpleNamespace(time=clock.__next__))
    monkeypatch.setattr(
      compare_schedules, "compile_seconds", lambda c=compiled: _compiles_in_first_stretch(c)
    )
    capsys.readouterr()
    compare_schedules.main([*part, "--time_limit=1", "--deadline=1085"])
    said = capsys.readouterr().out
    assert ("stopped at step 2 of 4" in said) == stops, said[-400:]
    assert {r["step"] for r in _evals(str(out))} == ({2} if stops else {2, 4})
    monkeypatch.undo()


def test_workers_get_the_parents_time_limit_deadline(tmp_path, monkeypatch):
  """--time_limit is counted from the command's start: every worker gets the parent's
  --deadline (workers that start later, e.g. after another's compile, do not get more time)."""
  started = []

  class FakeProcess:
    def __init__(self, argv, env):
      started.append(argv)

    def wait(self):
      return 0

  monkeypatch.setattr(compare_schedules.subprocess, "Popen", FakeProcess)
  flags = ["--workers=2", f"--out={tmp_path}", f"--state_dir={tmp_path}", "--time_limit=300"]
  monkeypatch.setattr(sys, "argv", ["compare_schedules.py", *flags])
  args = compare_schedules.parse(flags)
  compare_schedules.spawn_workers(args)
  assert len(started) == 2
  for argv in started:
    deadlines = [a for a in argv if a.startswith("--deadline=")]
    assert deadlines == [f"--deadline={args.deadline}"]
    worker = compare_schedules.parse([a for a in argv[2:] if not a.startswith("--shard")])
    assert worker.deadline == args.deadline


def test_report_notes_an_arm_whose_records_mix_weight_gradients(tmp_path):
  """--conv_wgrad is not in the config hash, so a rerun with another choice appends to the
  same arm: the report keeps the records and says they mix."""
  args = compare_schedules.parse(
    [f"--out={tmp_path}", f"--config={TEST_CONFIG}", "--arms=lognormal", "--data=continuous"]
  )
  ((d, a, arm),) = compare_schedules.groups(args)
  h = compare_schedules.config_hash(compare_schedules.make_config(args, d, arm))
  recs = [
    {"kind": "eval", "data": d, "arm": a, "seed": s, "step": 2, "fd": 1.0, "resample": False}
    | {"config_hash": h, "num_samples": args.num_samples, "conv_wgrad": w}
    for s, w in ((0, "conv"), (1, "taps"))
  ]
  kept, notes = compare_schedules.current_records(args, recs)
  assert len(kept) == 2
  assert any("mix weight gradients (conv, taps;" in n for n in notes)
  kept, notes = compare_schedules.current_records(args, recs[:1])
  assert not any("mix" in n for n in notes)


def test_bad_arm_or_data_fails_before_any_work(tmp_path, capsys):
  with pytest.raises(SystemExit):
    compare_schedules.main([f"--out={tmp_path}", "--arms=lognorm"])
  assert "unknown arm 'lognorm'" in capsys.readouterr().err
  dna = os.path.join(ROOT, "configs", "dna.py:cpu")
  with pytest.raises(SystemExit):  # token data with the default --data=continuous,binarized
    compare_schedules.main([f"--out={tmp_path}", f"--config={dna}", "--arms=lognormal"])
  assert "use --data=native" in capsys.readouterr().err
  assert not os.listdir(tmp_path)  # nothing written


def test_set_and_arm_take_booleans_as_the_trainers_flags_do():
  """--config.schedule.infonoise.compensate=false trains; --arm / --set ...compensate=false
  (or 0) was a type error ('false' is a string to a Python literal)."""
  args = compare_schedules.parse(
    ["--out=/unused", f"--config={TEST_CONFIG}", "--set=schedule.infonoise.compensate=false"]
  )
  config = compare_schedules.make_config(args, "continuous", {})
  assert config.schedule.infonoise.compensate is False
  for word, want in (("0", False), ("TRUE", True), ("False", False), ("1", True)):
    arm = compare_schedules.parse_arms("", [f"a:schedule.infonoise.compensate={word}"])["a"]
    c = compare_schedules.make_config(args, "continuous", arm, "a")
    assert c.schedule.infonoise.compensate is want
  arm = compare_schedules.parse_arms("", ["a:schedule.infonoise.compensate=yes"])["a"]
  with pytest.raises(ValueError, match=r"schedule\.infonoise\.compensate='yes'"):
    compare_schedules.make_config(args, "continuous", arm, "a")


def test_help_explains_the_formats_and_lists_every_named_arm(capsys):
  """--help carries the module docstring (the formats are explained only there) and the arms."""
  with pytest.raises(SystemExit):
    compare_schedules.parse(["--help"])
  text = " ".join(capsys.readouterr().out.split())
  assert " ".join(compare_schedules.__doc__.split()[:40]) in text
  for name in compare_schedules.named_arms():
    assert name in text


def test_a_newly_registered_schedule_is_an_arm_of_its_name(monkeypatch):
  """A schedule added to SCHEDULES as docs/schedules.md says is an --arms name with no edit to
  the harness (its arm list was kept by hand and refused it)."""
  from infonoise_jax import schedules

  monkeypatch.setitem(schedules.SCHEDULES, "my_law", schedules.LogNormal)
  arms = compare_schedules.parse_arms("lognormal,my_law", None)
  assert arms == {
    "lognormal": {"schedule.name": "lognormal"},
    "my_law": {"schedule.name": "my_law"},
  }
  with pytest.raises(ValueError, match="known: .*my_law"):
    compare_schedules.parse_arms("my_lw", None)
  # a named arm of the same name would silently take the schedule's place (named_arms)
  assert not set(compare_schedules.ARMS) & set(schedules.SCHEDULES), "rename the arm"


@pytest.mark.parametrize(
  "flags, message",
  [
    (
      ["--arm", "pin:schedule.infonoise.gate_pivto=0.15"],
      "--arm pin: schedule.infonoise.gate_pivto=...: no such config key. Did you mean "
      '"schedule.infonoise.gate_pivot"?',
    ),
    (
      ["--arm", "pin:schedule.infonoise.gate_pivot=abc"],
      "--arm pin: schedule.infonoise.gate_pivot=",
    ),
    (["--arm", "few:schedule.infonoise.num_bins=0"], "arm 'few' (--data=continuous)"),
    (["--arm", "typo:schedule.name=infonose"], "schedule.name must be one of"),
    (["--arm", "pin:schedule.infonoise.gate_pivot"], "--arm pin: expects key=value"),
    (["--arm", "pin:"], "--arm expects 'name:key=value;...'"),
    (["--set", "train.batchsize=8"], 'Did you mean "train.batch_size"?'),
    (["--set", "schedule.infonoise.num_bins=0"], "arm 'infonoise' (--data=continuous)"),
    # The network for the data's images: a traceback after the floor was written (and, for a
    # later arm, after the arms before it trained)
    (["--arm", "u:model.name=unett"], "arm 'u' (--data=continuous): config.model.name='unett'"),
    (["--arm", "u:model.name=unet;model.attn_resolutions=(3,)"], "not among this image's U-Net"),
    (["--baseline=foo"], "--baseline='foo' is not one of this command's arms"),
    # lists and counts: tracebacks after the floor was written (2026-12-07 probe)
    (["--seeds=0,x"], "--seeds='0,x': expected a comma list of whole numbers >= 0"),
    (["--seeds=0,,1"], "--seeds='0,,1': expected a comma list"),
    (["--seeds=0,0"], "--seeds='0,0': a value is given twice"),
    (["--arms="], "--arms is empty and no --arm is given"),
    (["--arms=lognormal,lognormal"], "--arms: arm 'lognormal' given twice"),
    (["--set=seed=5"], "--set seed=...: the harness sets seed from its own flag; use --seeds"),
    (
      ["--set=train.num_steps=50"],
      "the harness sets train.num_steps from its own flag; use --steps",
    ),
    (["--arm", "x:train.num_steps=50"], "--arm x: train.num_steps=...: the harness sets"),
    # the arm's schedule won in silence, so the typo was never checked (2026-12-07 probe)
    (["--set=schedule.name=lognormall"], "--set schedule.name=lognormall and arm lognormal"),
    (["--num_samples=1"], "--num_samples=1 and --grid_samples=1000 must be >= 2"),
    (["--grid_steps=abc"], "--grid_steps='abc': expected a comma list of whole numbers >= 2"),
    (["--grid_steps=1"], "--grid_steps='1': expected a comma list of whole numbers >= 2"),
    (["--grid_steps=6", "--grid_seeds=5"], "--grid_seeds=5 names none of --seeds=0,1"),
    # an --arm named like an --arms arm relabelled another setting as that arm
    (
      ["--arm", "lognormal:schedule.name=cosine"],
      "--arm lognormal: the name is already given by --arms",
    ),
  ],
)
def test_every_arms_config_is_checked_before_the_first_arm_trains(tmp_path, capsys, flags, message):
  """A bad key or value in any arm (or in --set) stops the harness at parse time naming the
  flag and key, not with a traceback after the arms before it trained."""
  with pytest.raises(SystemExit) as e:
    compare_schedules.main([*_args(str(tmp_path)), *flags])
  assert e.value.code == 2  # argparse's error exit
  assert message in capsys.readouterr().err
  assert not os.listdir(tmp_path)  # nothing trained, nothing written


def test_report_only_with_no_matching_records_keeps_the_report(tmp_path, capsys):
  """--report_only whose settings match none of the folder's records exits with an error and
  leaves summary.md as it was (it used to replace it with an empty file)."""
  out = str(tmp_path)
  rec = {"kind": "eval", "data": "continuous", "arm": "lognormal", "seed": 0, "step": 2,
         "fd": 1.0, "resample": False, "config_hash": "other", "num_samples": 32}  # fmt: skip
  with open(os.path.join(out, "results.jsonl"), "w") as f:
    f.write(json.dumps(rec) + "\n" + json.dumps({**rec, "config_hash": "third"}) + "\n")
  with open(os.path.join(out, "summary.md"), "w") as f:
    f.write("the earlier report\n")
  with pytest.raises(SystemExit) as e:
    compare_schedules.main([*_args(out), "--arms=lognormal", "--report_only"])
  assert "No evaluation in" in str(e.value) and "left as they were" in str(e.value)
  with open(os.path.join(out, "summary.md")) as f:
    assert f.read() == "the earlier report\n"
  assert "2 other settings, none this command's" in capsys.readouterr().out


def test_every_named_arm_builds_and_fair_peers_take_infonoise_terms():
  from infonoise_jax.schedules import make_schedule

  args = compare_schedules.parse(["--out=/unused", f"--config={TEST_CONFIG}"])
  info = make_schedule(compare_schedules.make_config(args, "continuous", {}))
  for name, arm in compare_schedules.named_arms().items():
    sched = make_schedule(compare_schedules.make_config(args, "binarized", arm))
    if name.endswith("_fair"):
      c = compare_schedules.make_config(args, "continuous", arm).schedule
      assert c.adaptive.warmup_steps == c.infonoise.warmup_steps
      assert c.adaptive.num_bins == c.infonoise.num_bins
      # same memory: per-step EMA over the span of InfoNoise's per-refresh EMA
      per_step = c.infonoise.ema_beta ** (1.0 / c.infonoise.refresh_every)
      assert abs(c.adaptive.ema_beta - per_step) < 2e-4
      assert sched.num_bins == info.num_bins and sched.warmup_steps == info.warmup_steps


def test_data_kinds_take_the_config_files_own_recipe():
  """`fashion` runs InfoNoise without compensation, gate pinned at 0.15, on continuous images;
  binarized data (the harness's `binarized`) get configs/default.py's `binarized` variant,
  i.e. the library setting, as `configs/default.py:fashion,binarized` gives it; a file
  without variants (configs/test.py) gets the data keys alone."""
  fashion = os.path.join(ROOT, "configs", "default.py") + ":fashion"
  args = compare_schedules.parse(["--out=/unused", f"--config={fashion}"])
  info = lambda c: (c.schedule.infonoise.compensate, c.schedule.infonoise.gate)
  continuous = compare_schedules.make_config(args, "continuous", {})
  binarized = compare_schedules.make_config(args, "binarized", {})
  assert info(continuous) == (False, "pinned") and continuous.schedule.infonoise.gate_pivot == 0.15
  assert info(binarized) == (True, "onset")
  assert (binarized.data.binarize, binarized.data.scale) == (True, 0.5)
  # an arm's keys still win over the recipe
  arm = compare_schedules.ARMS["infonoise_library"]
  assert info(compare_schedules.make_config(args, "continuous", arm)) == (True, "onset")
  args = compare_schedules.parse(["--out=/unused", f"--config={TEST_CONFIG}"])
  plain = compare_schedules.make_config(args, "binarized", {})
  assert plain.data.binarize and info(plain) == info(load_config_file(TEST_CONFIG))


def test_config_hash_leaves_out_execution_keys_only():
  config = load_config_file(TEST_CONFIG, "infonoise")
  h = compare_schedules.config_hash(config)
  assert compare_schedules.config_hash(json.loads(config.to_json_best_effort())) == h
  changed = config.copy_and_resolve_references()
  changed.train.max_steps_in_flight = 3
  changed.train.log_every = 7
  changed.system.compilation_cache_dir = "/elsewhere"
  changed.fid.cache_dir = "/elsewhere"
  assert compare_schedules.config_hash(changed) == h
  for key, value in (("optim.lr", 1e-5), ("train.batch_size", 8), ("sampler.num_steps", 5)):
    other = config.copy_and_resolve_references()
    section, leaf = key.split(".")
    other[section][leaf] = value
    assert compare_schedules.config_hash(other) != h, key


def test_records_hashed_with_execution_keys_still_count_as_done(tmp_path):
  """Records written when the hash covered every key (and train.max_steps_in_flight had another
  default) match today's config through the config they carry: the rerun appends nothing,
  grid records (no config of their own) included."""
  out = str(tmp_path)
  args = [*_args(out), "--seeds=0", "--arms=infonoise", "--grid_steps=3", "--grid_seeds=0"]
  args += ["--grid_samples=16"]
  compare_schedules.main(args)
  path = os.path.join(out, "results.jsonl")
  recs = [json.loads(line) for line in open(path)]
  assert {r["kind"] for r in recs} >= {"eval", "grid"}
  for r in recs:
    if r["kind"] != "floor":
      r["config_hash"] = "0123456789abcdef"  # the old hash of the old config
    if "config" in r:
      r["config"]["train"]["max_steps_in_flight"] = 4
  with open(path, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in recs)
  compare_schedules.main(args)
  assert len(open(path).read().splitlines()) == len(recs)
  summary = open(os.path.join(out, "summary.md")).read()
  assert "| infonoise | 1 |" in summary and "left out" not in summary


def test_the_same_data_spelled_another_way_is_the_same_setting(tmp_path):
  """data.path as typed changed the config hash: the same file given relative to the current
  directory, or through `sub/..`, trained the arms again and appended a second curve, and
  the floor was measured again per spelling (a report run from another folder than the
  training called the floor "other settings")."""
  (tmp_path / "sub").mkdir()
  images = np.random.default_rng(0).integers(0, 256, (64, 8, 8), np.uint8)
  np.save(tmp_path / "x.npy", images)
  out = str(tmp_path / "out")
  base = [*_args(out), "--seeds=0", "--arms=lognormal", "--set=data.name=images"]
  compare_schedules.main([*base, f"--set=data.path={tmp_path / 'x.npy'}"])
  first = _evals(out)
  for spelled in [os.path.relpath(tmp_path / "x.npy"), f"{tmp_path}/sub/../x.npy"]:
    compare_schedules.main([*base, f"--set=data.path={spelled}"])
    assert _evals(out) == first, spelled
  assert len(_records(out, "floor")) == 1
  other = tmp_path / "y.npy"  # other data is another setting: trained and appended
  np.save(other, images[::-1].copy())
  compare_schedules.main([*base, f"--set=data.path={other}"])
  assert len(_evals(out)) == 2 * len(first)


def test_grid_study_and_final_samples_are_recorded_once(tmp_path):
  out = str(tmp_path)
  args = [*_args(out), "--seeds=0", "--grid_steps=3,4", "--grid_seeds=0", "--grid_samples=16"]
  args += ["--save_samples"]
  compare_schedules.main(args)
  with open(os.path.join(out, "results.jsonl")) as f:
    grid = [json.loads(line) for line in f if '"grid"' in line]
  grid = [r for r in grid if r["kind"] == "grid"]
  # only the arm with a learned profile; every (solver, grid) at both level counts
  assert {r["arm"] for r in grid} == {"infonoise"}
  assert len(grid) == len(compare_schedules.GRID_SETTINGS) * 2
  assert {r["nfe"] for r in grid} == {5, 7}
  assert all(np.isfinite(r["fd"]) for r in grid)
  digits = {"data": "digits", "binarized": False, "reference_data": None, "image_size": 0}
  for arm in ("lognormal", "infonoise"):
    path = os.path.join(out, f"final_continuous_{arm}.npz")
    with np.load(path) as z:
      (key,) = set(z.files) - {SAMPLES_DATA_KEY}
      assert key == f"{arm}__seed0__step4"
      assert z[key].dtype == np.uint8 and z[key].shape[0] == 32
    assert compare_schedules.saved_identity(path) == digits  # fid_of_samples checks it
  # The grid study's samples are kept too (for Inception FID), one array per setting and seed,
  # named so that fid_of_samples.py scores each setting as an arm of its own.
  grid_file = os.path.join(out, "grid_continuous_infonoise.npz")
  assert compare_schedules.saved_identity(grid_file) == digits
  with np.load(grid_file) as z:
    keys = set(z.files) - {SAMPLES_DATA_KEY}
    assert all(z[k].dtype == np.uint8 and z[k].shape[0] == 16 for k in keys)
  want = {
    f"infonoise@{m}-{g}-{n}__seed0__step4"
    for m, g in compare_schedules.GRID_SETTINGS
    for n in (3, 4)
  }
  assert keys == want
  assert fid_of_samples.parse_key("infonoise@heun-infogrid-3__seed0__step4") == (
    "infonoise@heun-infogrid-3",
    0,
    4,
  )
  assert not os.path.exists(os.path.join(out, "grid_continuous_lognormal.npz"))
  summary = open(os.path.join(out, "summary.md")).read()
  assert "| infonoise | exp_heun | infogrid |" in summary and "7 NFE" in summary
  mtime = os.path.getmtime(grid_file)
  compare_schedules.main(args)  # complete: nothing appended, no sample redrawn
  with open(os.path.join(out, "results.jsonl")) as f:
    assert sum(json.loads(line)["kind"] == "grid" for line in f) == len(grid)
  assert os.path.getmtime(grid_file) == mtime


def test_data_that_cannot_be_scored_is_refused_in_parse(tmp_path, capsys):
  """Before any compile, in one line: missing files, one image (the Frechet distance needs a
  covariance), token data with fewer than 2 x --num_samples held-out windows (it named
  train.eval_num_samples in a traceback after start-up), and --report_only on a folder that
  holds no results.jsonl (it made the folder and blamed the arguments)."""
  one = tmp_path / "one"
  one.mkdir()
  from PIL import Image

  Image.fromarray(np.arange(0, 256, 4, dtype=np.uint8).reshape(8, 8)).save(one / "a.png")
  text = tmp_path / "t.txt"
  text.write_text("".join(np.random.default_rng(0).choice(list("abcd "), 2000)))  # 12 held out
  images = [f"--config={TEST_CONFIG}", "--data=continuous", "--set=data.name=images"]
  tokens = ["--config=configs/text.py:cpu", "--data=native", f"--set=data.path={text}"]
  tokens += ["--set=data.seq_len=16", "--num_samples=8"]
  for flags, says in [
    ([*images, f"--set=data.path={tmp_path / 'missing'}"], "missing"),
    ([*images, f"--set=data.path={one}"], "gives 1 example; the Frechet distance"),
    (tokens, r"--num_samples=8: .* needs 2 x 8 held-out windows .* gives 12 .* --num_samples=6 "),
    ([f"--config={TEST_CONFIG}", "--report_only"], "results.jsonl does not exist"),
  ]:
    out = tmp_path / "out"
    with pytest.raises(SystemExit):
      compare_schedules.parse([f"--out={out}", "--steps=4", "--arms=lognormal", *flags])
    err = capsys.readouterr().err
    assert re.search(says, err), err[-500:]
    assert not out.exists()
  args = compare_schedules.parse([f"--out={tmp_path}", *tokens[:-1], "--num_samples=6"])
  assert compare_schedules.data_problem(args, "native", {}) is None


def test_outputs_inside_the_data_folder_are_refused_in_parse(tmp_path, capsys):
  """--out (or --state_dir, --samples_dir) inside the data.path folder: the first call wrote
  its curves and sample grids among the images, and the rerun that goes on with it failed on
  them as 'an image of another size; resize the images to one size first'."""
  from PIL import Image

  imgs = tmp_path / "imgs"
  imgs.mkdir()
  for i in range(2):
    Image.fromarray(np.full((8, 8), 60 * i, np.uint8)).save(imgs / f"{i}.png")
  argv = [f"--config={TEST_CONFIG}", "--data=continuous", "--steps=4", "--arms=lognormal"]
  argv += ["--set=data.name=images", f"--set=data.path={imgs}"]
  for flags in (
    [f"--out={imgs / 'cmp'}"],
    [f"--out={tmp_path / 'cmp'}", f"--state_dir={imgs / 'state'}"],
    [f"--out={tmp_path / 'cmp'}", "--save_samples", f"--samples_dir={imgs}"],
  ):
    with pytest.raises(SystemExit):
      compare_schedules.parse([*argv, *flags])
    flag = flags[-1].split("=")[0]
    assert f"{flag}={imgs}" in capsys.readouterr().err
  assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs"]
  compare_schedules.parse([*argv, f"--out={tmp_path / 'cmp'}", f"--state_dir={tmp_path / 's'}"])


def test_harness_on_text_ranks_by_the_domain_metric_with_a_floor(tmp_path):
  """Token data (`--data=native` of configs/text.py): domain metrics, their floor, the report."""
  sets = {
    "model.width": 32,
    "model.depth": 1,
    "model.num_heads": 2,
    "data.seq_len": 16,
    "train.batch_size": 16,
    "sampler.num_steps": 4,
    "schedule.infonoise.num_bins": 16,
    "schedule.infonoise.warmup_steps": 2,
    "schedule.infonoise.refresh_every": 2,
    "schedule.infonoise.min_count": 1,
  }
  out = str(tmp_path)
  argv = [
    f"--out={out}",
    "--config=configs/text.py:cpu",
    "--steps=4",
    "--eval_every=2",
    "--num_samples=16",
    "--seeds=0",
    "--data=native",
    "--arms=lognormal,infonoise",
    *[f"--set={k}={v}" for k, v in sets.items()],
  ]
  compare_schedules.main(argv)
  with open(os.path.join(out, "results.jsonl")) as f:
    recs = [json.loads(line) for line in f]
  (floor,) = [r for r in recs if r["kind"] == "floor"]
  evals = [r for r in recs if r["kind"] == "eval"]
  assert len(evals) == 2 * 3  # 2 arms x (steps 2, 4, resampled 4)
  # A record's config is what its hash names (the command's: sigma_data 0 for tokens), and
  # the value the data resolved stands beside it; so a rerun finds every evaluation done.
  for r in evals:
    assert compare_schedules.config_hash(r["config"]) == r["config_hash"]
    assert r["config"]["edm"]["sigma_data"] == 0.0 and 0.05 < r["sigma_data"] < 0.5
  compare_schedules.main(argv)
  with open(os.path.join(out, "results.jsonl")) as f:
    assert len(f.readlines()) == len(recs)
  assert {r["metric"] for r in evals} == {floor["metric"]} == {"ngram_js_4"}
  # a barely trained model's 4-gram spectrum is far from text's; real text is close
  assert all(r["ngram_js_4"] > floor["ngram_js_4"] for r in evals)
  summary = open(os.path.join(out, "summary.md")).read()
  assert "Metric: `ngram_js_4`" in summary and "| infonoise | 1 |" in summary


def test_saved_samples_at_chosen_steps_with_their_own_count(tmp_path):
  """--save_num draws its own samples (not the evaluation's 32) at each --save_steps step,
  into --samples_dir; a rerun neither draws nor writes them again."""
  out, keep = str(tmp_path / "out"), str(tmp_path / "keep")
  args = [*_args(out), "--arms=lognormal", "--seeds=0,1", "--save_samples", "--save_num=12"]
  args += ["--save_steps=1,4", f"--samples_dir={keep}"]
  compare_schedules.main(args)
  path = os.path.join(keep, "final_continuous_lognormal.npz")
  with np.load(path) as z:
    got = {k: z[k] for k in z.files if k != SAMPLES_DATA_KEY}
  assert set(got) == {f"lognormal__seed{s}__step{t}" for s in (0, 1) for t in (1, 4)}
  assert all(v.dtype == np.uint8 and v.shape[0] == 12 for v in got.values())
  # the two seeds' models differ, and so do a model's samples at steps 1 and 4
  assert not np.array_equal(got["lognormal__seed0__step4"], got["lognormal__seed1__step4"])
  assert not np.array_equal(got["lognormal__seed0__step1"], got["lognormal__seed0__step4"])
  assert not os.path.exists(os.path.join(out, "final_continuous_lognormal.npz"))
  mtime = os.path.getmtime(path)
  compare_schedules.main(args)  # complete: nothing redrawn or rewritten
  assert os.path.getmtime(path) == mtime


def test_saved_samples_record_their_data_and_other_datas_file_is_refused(tmp_path):
  """The samples file records the data its samples were trained on (fid_of_samples refuses
  to score them against another reference): a binarized run's says so. Samples of this run
  are not added to a file that records other data, and that is found before training; a file
  without the record (an older run's) gets its new arrays and stays without one."""
  keep = tmp_path / "keep"
  args = [*_args(str(tmp_path / "out")), "--arms=lognormal", "--seeds=0", "--save_samples"]
  args += ["--data=binarized", "--steps=2", f"--samples_dir={keep}"]
  compare_schedules.main(args)
  path = keep / "final_binarized_lognormal.npz"
  assert compare_schedules.saved_identity(str(path)) == {
    "data": "digits",
    "binarized": True,
    "reference_data": None,
    "image_size": 0,
  }
  with np.load(path) as z:
    x = {k: z[k] for k in z.files if k != SAMPLES_DATA_KEY}
  resized = {**compare_schedules.saved_identity(str(path)), "image_size": 16}
  other = json.dumps({"data": "images", "binarized": True, "reference_data": "abc"})
  for record in (json.dumps(resized), other):  # the same data at another size, other data
    np.savez_compressed(path, **x, **{SAMPLES_DATA_KEY: np.array(record)})
    with pytest.raises(ValueError, match="holds samples of other data"):
      compare_schedules.main([*args, "--steps=4"])
  with open(tmp_path / "out" / "results.jsonl") as f:
    assert all(json.loads(line).get("step", 0) <= 2 for line in f)  # nothing trained
  np.savez_compressed(path, **x)  # as an older run wrote it
  compare_schedules.main([*args, "--steps=4"])
  with np.load(path) as z:
    assert set(z.files) == {*x, "lognormal__seed0__step4"}  # no record claimed for old arrays
  # Own images read from another folder (another digest) are the same data by their listing.
  own = {"data": "images", "binarized": False, "reference_data": "a1", "listing": "L", "where": "x"}
  assert same_data(own, {**own, "reference_data": "b2", "where": "/y"})
  assert not same_data(own, {**own, "reference_data": "b2", "listing": "M"})
  assert not same_data(own, {**own, "binarized": True})
  # The same files at another data.image_size are other images (older records lack the size).
  assert not same_data({**own, "image_size": 0}, {**own, "image_size": 16})
  assert same_data({**own, "image_size": 16}, own) and same_data(own, {**own, "image_size": 16})
  # A tfds set read through another image feature is other images.
  tfds_set = {"data": "tfds:x", "binarized": False, "reference_data": "d", "image_size": 0}
  assert not same_data(tfds_set, {**tfds_set, "image_key": "depth"})
  assert same_data(tfds_set, {**tfds_set, "image_key": "image", "where": "elsewhere"})


@pytest.mark.parametrize("draw", ["fixed", "per_step"])
def test_evaluation_draws_are_shared_by_runs_and_fixed_across_steps_by_default(
  tmp_path, monkeypatch, draw
):
  """Every run draws an evaluation from the same seed (arms and seeds compare paired); with
  the default fixed draw also every step (a curve's steps compare paired); the resampled draw
  and the kept samples use seeds of their own. The records say which draw made them."""
  seen = []  # (run index, sample count, seed) of each draw

  def samples(self, state, r, num, seed):
    seen.append((r, num, seed))
    return self.sampler.draw_ema(self.run_state(state, r), num, seed)

  monkeypatch.setattr(multirun.MultiRun, "samples", samples)
  out = str(tmp_path)
  args = [*_args(out), "--arms=lognormal", "--save_samples", "--save_num=12", "--save_steps=2"]
  compare_schedules.main([*args] if draw == "fixed" else [*args, f"--eval_draw={draw}"])
  evals = _evals(out)
  assert {r["eval_draw"] for r in evals} == {draw}
  kept = {s for _, n, s in seen if n == 12}
  draws = [s for _, n, s in seen if n == 32]  # in the order of the records they made
  by = {}  # (step, resample) -> the seeds its records were drawn from
  for rec, s in zip(evals, draws, strict=True):
    by.setdefault((rec["step"], rec["resample"]), set()).add(s)
  assert all(len(v) == 1 for v in by.values())  # both training seeds: one draw per step
  ((s2,), (s4,), (s4r,)) = by[(2, False)], by[(4, False)], by[(4, True)]
  assert (s2 == s4) == (draw == "fixed")
  assert s4r not in (s2, s4) and not kept & {s2, s4, s4r}


def test_going_on_with_another_draw_fails_before_any_work(tmp_path, capsys):
  """Results drawn per step (older code, or --eval_draw=per_step) are not continued with the
  fixed draw: the message names the arm and the flag that goes on with them."""
  out = str(tmp_path)
  args = [*_args(out), "--arms=lognormal", "--seeds=0", "--steps=2"]
  compare_schedules.main([*args, "--eval_draw=per_step"])
  with pytest.raises(SystemExit):
    compare_schedules.parse(args)
  err = capsys.readouterr().err
  assert "continuous/lognormal drawn per_step" in err and "another --out" in err
  compare_schedules.parse([*args, "--eval_draw=per_step"])  # going on with the same rule: fine
  compare_schedules.parse([*args, "--report_only"])  # a report keeps the draws apart itself
  compare_schedules.parse([*args, "--num_samples=16"])  # another measurement of the same arm


def test_kept_state_resumes_to_the_same_evaluations_as_one_uninterrupted_run(tmp_path, capsys):
  """--stop_at trains part of the budget and keeps the state; the rerun trains on from it and
  scores what an uninterrupted run scores (same batches, same state, same sample seeds)."""
  whole, parts = str(tmp_path / "whole"), str(tmp_path / "parts")
  compare_schedules.main([*_args(whole), "--arms=infonoise"])
  part = [*_args(parts), "--arms=infonoise", f"--state_dir={tmp_path / 'state'}"]
  compare_schedules.main([*part, "--stop_at=3"])
  assert {r["step"] for r in _evals(parts)} == {2}
  assert not os.path.exists(os.path.join(parts, "summary.md"))  # the report waits
  compare_schedules.main([*part, "--stop_at=3"])  # nothing left before step 3: no training
  assert len(_evals(parts)) == 2
  capsys.readouterr()
  compare_schedules.main(part)
  assert "resumed from step 3" in capsys.readouterr().out  # not retrained from step 0
  key = lambda r: (r["seed"], r["step"], r["resample"])
  got = {key(r): r for r in _evals(parts)}
  want = {key(r): r for r in _evals(whole)}
  assert set(got) == set(want) and len(got) == 6
  for k, r in want.items():
    np.testing.assert_allclose(got[k]["fd"], r["fd"], rtol=1e-6)
    if "m_K" in r:
      np.testing.assert_allclose(got[k]["m_K"], r["m_K"], rtol=1e-6)
  assert any("m_K" in r for r in want.values())
  assert os.path.getsize(os.path.join(parts, "summary.md")) > 0


def test_a_lost_kept_state_stops_before_training_from_step_0_again(tmp_path, capsys):
  """Evaluations in --out but no kept state in --state_dir (the machine that kept it went back):
  the rerun stops in parse, naming the arm and its last recorded step, instead of spending the
  call on retraining and appending another model's evaluations to the curve."""
  out, kept, empty = str(tmp_path / "out"), str(tmp_path / "kept"), str(tmp_path / "empty")
  args = [*_args(out), "--arms=lognormal"]
  compare_schedules.main([*args, f"--state_dir={kept}", "--stop_at=2"])
  compare_schedules.parse([*args, f"--state_dir={kept}"])  # the kept state is there: fine
  capsys.readouterr()
  with pytest.raises(SystemExit):
    compare_schedules.parse([*args, f"--state_dir={empty}"])
  err = capsys.readouterr().err
  assert "continuous/lognormal (evaluated to step 2)" in err and "--restart_lost_state" in err
  assert not os.path.exists(empty)  # nothing created before the error
  with pytest.raises(SystemExit):  # other --seeds look in another folder: said so
    compare_schedules.parse([*args, f"--state_dir={kept}", "--seeds=0"])
  err = capsys.readouterr().err
  assert "continuous/lognormal (evaluated to step 2; kept for --seeds=0,1 only)" in err
  compare_schedules.parse([*args, f"--state_dir={empty}", "--restart_lost_state"])
  compare_schedules.parse([*args, f"--state_dir={empty}", "--arms=infonoise"])  # no records
  compare_schedules.parse([*args, f"--state_dir={empty}", "--num_samples=16"])  # other setting
  compare_schedules.parse([*args, f"--state_dir={empty}", "--report_only"])


def test_a_kill_while_evaluating_loses_no_training_and_the_rerun_fills_the_gap(
  tmp_path, monkeypatch, capsys
):
  """The kept state is written before a step's evaluations: a kill after the first record of
  step 2 leaves the state at step 2, and the rerun resumes there (no step trained twice),
  writes step 2's missing evaluations first, and ends with an uninterrupted run's records."""
  whole, parts = str(tmp_path / "whole"), str(tmp_path / "parts")
  compare_schedules.main([*_args(whole), "--arms=infonoise"])
  part = [*_args(parts), "--arms=infonoise", f"--state_dir={tmp_path / 'state'}"]
  append = compare_schedules.report.append_record
  written = []

  def killed_after_one(path, rec):
    if rec.get("kind") == "eval" and written:
      raise KeyboardInterrupt("killed while evaluating")
    append(path, rec)
    if rec.get("kind") == "eval":
      written.append(rec)

  monkeypatch.setattr(compare_schedules.report, "append_record", killed_after_one)
  with pytest.raises(KeyboardInterrupt):
    compare_schedules.main(part)
  monkeypatch.setattr(compare_schedules.report, "append_record", append)
  assert [(r["seed"], r["step"]) for r in _evals(parts)] == [(0, 2)]
  capsys.readouterr()
  compare_schedules.main(part)
  out = capsys.readouterr().out
  assert "resumed from step 2" in out
  key = lambda r: (r["seed"], r["step"], r["resample"])
  got = [key(r) for r in _evals(parts)]
  assert len(got) == len(set(got)) == 6  # no evaluation twice
  assert got[1] == (1, 2, False)  # the gap first, before step 3 trains
  want = {key(r): r["fd"] for r in _evals(whole)}
  for r in _evals(parts):
    np.testing.assert_allclose(r["fd"], want[key(r)], rtol=1e-6)


def test_a_kept_state_ahead_of_the_recorded_curve_stops_before_any_work(tmp_path, capsys):
  """The other way round: a --state_dir kept at step 3 given with a new --out (or a finer
  --eval_every) would resume at 3 and never evaluate step 2 (or 1): refused in parse, naming
  the arm, the kept step and the missing evaluations; the --out it was kept with goes on."""
  out, kept = str(tmp_path / "out"), str(tmp_path / "kept")
  args = [*_args(out), "--arms=lognormal", f"--state_dir={kept}"]
  compare_schedules.main([*args, "--stop_at=3"])
  compare_schedules.parse(args)  # the evaluation of step 2 is there, step 3's comes on resume
  for other in ([f"--out={tmp_path / 'new'}"], ["--eval_every=1"]):
    capsys.readouterr()
    with pytest.raises(SystemExit):
      compare_schedules.parse([*args, *other])
    err = capsys.readouterr().err
    assert "keeps continuous/lognormal at step 3 (no evaluation of step " in err
    assert "another --state_dir" in err
  assert not os.path.exists(tmp_path / "new")  # nothing created before the error
  compare_schedules.parse([*args, f"--out={tmp_path / 'new'}", f"--state_dir={tmp_path / 's2'}"])


def test_time_limit_stops_at_a_kept_step_and_the_rerun_goes_on(tmp_path, monkeypatch, capsys):
  """--time_limit stops each arm at the first kept step from which the next stretch (timed as
  the longest so far) would end past it, state kept and no report; an arm that would start
  past it does not start; a rerun goes on to the uninterrupted run's records. It needs a
  --state_dir, and workers keep the parent's deadline. The harness's clock is a fake one
  that ticks 10 s per reading, so the stops do not depend on this machine's speed."""
  whole, parts = str(tmp_path / "whole"), str(tmp_path / "parts")
  compare_schedules.main([*_args(whole), "--arms=infonoise"])
  part = [*_args(parts), "--arms=infonoise", f"--state_dir={tmp_path / 'state'}"]
  clock = itertools.count(1000, 10)
  monkeypatch.setattr(compare_schedules, "time", types.SimpleNamespace(time=lambda: next(clock)))
  monkeypatch.setattr(compare_schedules, "compile_seconds", lambda: _compiles_in_first_stretch(0))
  capsys.readouterr()
  compare_schedules.main([*part, "--time_limit=1", "--deadline=900"])  # past: nothing starts
  assert "not started, --time_limit reached" in capsys.readouterr().out
  assert _evals(parts) == []
  # Starts at 1000; the first stretch (a few readings) ends past 1045, so it stops at step 2.
  compare_schedules.main([*part, "--time_limit=1", "--deadline=1045"])
  out = capsys.readouterr().out
  assert "stopped at step 2 of 4 (--time_limit" in out and "report waits" in out
  monkeypatch.undo()
  assert {r["step"] for r in _evals(parts)} == {2}
  assert not os.path.exists(os.path.join(parts, "summary.md"))
  compare_schedules.main([*part, "--time_limit=3600"])  # room for the rest
  assert "resumed from step 2" in capsys.readouterr().out
  key = lambda r: (r["seed"], r["step"], r["resample"])
  want = {key(r): r["fd"] for r in _evals(whole)}
  got = {key(r): r["fd"] for r in _evals(parts)}
  assert set(got) == set(want)
  for k, fd in want.items():
    np.testing.assert_allclose(got[k], fd, rtol=1e-6)
  assert os.path.getsize(os.path.join(parts, "summary.md")) > 0
  for bad in (["--time_limit=60"], ["--time_limit=-1", f"--state_dir={tmp_path}"]):
    with pytest.raises(SystemExit):
      compare_schedules.parse([*_args(tmp_path), *bad])
    assert "--time_limit" in capsys.readouterr().err
  args = compare_schedules.parse([*part, "--time_limit=60"])
  assert 0 < args.deadline - __import__("time").time() <= 60
  given = compare_schedules.parse([*part, "--time_limit=60", "--deadline=123.5"])
  assert given.deadline == 123.5  # a worker keeps its parent's clock


def test_stop_at_without_a_state_dir_fails_before_any_work(tmp_path):
  with pytest.raises(SystemExit):
    compare_schedules.parse([*_args(tmp_path), "--speedup_tail=0"])
  with pytest.raises(SystemExit):
    compare_schedules.parse([*_args(tmp_path), "--stop_at=2"])
  with pytest.raises(SystemExit):
    compare_schedules.parse([*_args(tmp_path), "--stop_at=5", f"--state_dir={tmp_path}"])


def test_bad_save_steps_fail_before_any_work(tmp_path):
  with pytest.raises(SystemExit):
    compare_schedules.parse(
      [f"--out={tmp_path}", "--steps=10", "--save_samples", "--save_steps=11"]
    )


def test_learned_allocation_rebuilds_each_runs_schedule_from_its_record(tmp_path, capsys):
  """experiments/learned_allocation.py: the learned schedule rebuilt from a run's final m_K
  gives the pivot the run logged (else it raises), and every row's band masses sum to 1."""
  import learned_allocation

  out = str(tmp_path)
  compare_schedules.main([*_args(out), "--seeds=0", "--arms=lognormal,infonoise"])
  path = os.path.join(out, "results.jsonl")
  learned_allocation.main([f"--results={path}", f"--out={out}/alloc.png", "--bands=0.002,0.5,80"])
  table = capsys.readouterr().out
  assert "| lognormal (fixed law) |" in table and "| infonoise seed 0 (step 4) |" in table
  assert os.path.getsize(os.path.join(out, "alloc.png")) > 0
  records = [json.loads(line) for line in open(path)]
  _, rows, _ = learned_allocation.rows(records, [0.002, 0.5, 80.0])
  for _, pi, phi, _, _ in rows:
    assert abs(sum(pi) - 1) < 1e-3 and abs(sum(phi) - 1) < 1e-3
  learned = next(r for r in records if "m_K" in r and not r["resample"])
  learned["gate_pivot"] *= 2  # a record the code cannot reproduce is an error
  with pytest.raises(ValueError, match="rebuilt gate pivot"):
    learned_allocation.rows([learned], [0.002, 80.0])


def test_report_keeps_each_arms_own_settings_apart(tmp_path):
  """One --out holding runs of other settings under the same arm names (another dataset or
  sample count; data kinds not asked for): the report takes this command's records only, and
  never averages two settings together."""
  args = compare_schedules.parse(_args(str(tmp_path)))
  mine = {
    a: compare_schedules.config_hash(compare_schedules.make_config(args, "continuous", arm))
    for _, a, arm in compare_schedules.groups(args)
  }
  floor = compare_schedules.floor_hash(
    compare_schedules.make_config(args, "continuous", {}), args.num_samples
  )

  def ev(arm, seed, h, n=32, data="continuous", draw="fixed"):
    return {"kind": "eval", "data": data, "arm": arm, "seed": seed, "step": 4, "fd": 1.0,
            "config_hash": h, "num_samples": n, "eval_draw": draw}  # fmt: skip

  records = [
    ev("lognormal", 0, mine["lognormal"]),
    ev("lognormal", 1, "another_dataset"),
    ev("lognormal", 2, mine["lognormal"], n=64),
    ev("lognormal", 0, mine["lognormal"], data="binarized"),  # a data kind not asked for
    ev("lognormal", 1, mine["lognormal"], draw="per_step"),  # another evaluation draw
    ev("infonoise", 0, "older_code"),  # one other setting alone: kept, with a note
    ev("infonoise", 1, "older_code"),
    {"kind": "floor", "data": "continuous", "fd": 0.5, "floor_hash": floor, "num_samples": 32},
    {"kind": "floor", "data": "continuous", "fd": 9.0, "floor_hash": "other", "num_samples": 64},
  ]
  kept, notes = compare_schedules.current_records(args, records)
  want = [records[0], records[5], records[6], records[7]]
  assert sorted(map(json.dumps, kept)) == sorted(map(json.dumps, want))
  assert any("infonoise" in n and "kept" in n for n in notes)
  assert any("lognormal" in n and "left out" in n for n in notes)
  mixed = [ev("vdmpp", 0, "a"), ev("vdmpp", 1, "b")]
  args2 = compare_schedules.parse([*_args(str(tmp_path)), "--arms=vdmpp"])
  kept, notes = compare_schedules.current_records(args2, mixed)
  assert kept == [] and "2 other settings" in notes[0]
  # an arm scored only with another sample count is not set beside the others (the metric is
  # biased by the count): left out, the note naming the count to report it with
  kept, notes = compare_schedules.current_records(args, [ev("infonoise", 0, "x", n=128)])
  assert kept == [] and "128 samples per evaluation (this command: 32)" in notes[0]
  assert "--num_samples=128 --report_only" in notes[0]
  # records that carry their resolved config: the note names the keys that differ and counts
  arms = {a: arm for _, a, arm in compare_schedules.groups(args)}
  cfg = json.loads(
    compare_schedules.make_config(args, "continuous", arms["infonoise"]).to_json_best_effort()
  )
  cfg["optim"]["lr"] = 0.5
  older = [ev("infonoise", s, "older_code") | {"config": cfg} for s in (0, 1)]
  kept, notes = compare_schedules.current_records(args, older)
  assert len(kept) == 2 and notes[0].startswith("continuous/infonoise (eval): 2 records made")
  assert "config optim.lr=0.5 (this command: " in notes[0] and notes[0].endswith("kept")


def test_token_records_from_before_the_config_copy_match_the_command():
  """Token-data records written when MultiRun resolved edm.sigma_data in the command's own
  config (no "sigma_data" field; the config holds the encoding's std) count as this
  command's; a sigma_data the command set itself is kept."""
  command = load_config_file(os.path.join(ROOT, "configs", "dna.py"), "infonoise,cpu")
  h = compare_schedules.config_hash(command)
  old = json.loads(command.to_json_best_effort())
  old["edm"]["sigma_data"] = TokenEncoding("ACGT").sigma_data
  records = [{"kind": "eval", "config_hash": "from-older-code", "config": old}]
  set_by_hand = json.loads(command.to_json_best_effort())
  set_by_hand["edm"]["sigma_data"] = 0.4  # also the std of V = 5 symbols, but typed
  records.append({"kind": "eval", "config_hash": "other", "config": set_by_hand})
  with mock.patch.object(compare_schedules.report, "read_records", return_value=records):
    got = compare_schedules.read_records("unused")
  assert got[0]["config_hash"] == h
  assert got[1]["config_hash"] == compare_schedules.config_hash(set_by_hand) != h


def test_samples_that_are_not_finite_stop_the_evaluation_naming_the_run():
  """A sampler or model that diverged while training's loss stayed finite: the evaluation
  names the arm, seed and step and how many samples are bad instead of scoring them (pixel FD
  would fail in the eigen-solver, token metrics would decode garbage)."""
  x = np.zeros((6, 2, 2, 1), np.float32)
  x[4, 0, 1, 0] = np.nan
  with pytest.raises(FloatingPointError, match=r"^infonoise seed 1, step 300: 1 of 6 samples"):
    compare_schedules.eval_metrics(x, None, None, "infonoise seed 1, step 300")
