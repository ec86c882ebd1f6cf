"""experiments/eval_draw_study.py: the draw-effect decomposition against constructed tables, and
one tiny end-to-end run on the test config."""

import argparse
import json
import os
import sys

import numpy as np
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "experiments"))

import compare_schedules  # noqa: E402
import eval_draw_study  # noqa: E402


def test_a_shared_draw_effect_is_recovered_and_correlates_fully():
  shared_D = np.array([0.0, 0.5, -0.2, 0.1, -0.4])
  fd_DR = np.array([7.0, 7.6, 8.1])[None, :] + shared_D[:, None]  # each run its own level
  e = eval_draw_study.draw_effects(fd_DR)
  np.testing.assert_allclose(e["shared_D"], shared_D - shared_D.mean(), atol=1e-12)
  assert e["corr"] == pytest.approx(1.0)
  assert e["spread"] == pytest.approx(np.abs(shared_D - shared_D.mean()).mean())


def test_independent_wobbles_do_not_correlate():
  rng = np.random.default_rng(0)
  fd_DR = 7.0 + 0.1 * rng.standard_normal((400, 2))
  e = eval_draw_study.draw_effects(fd_DR)
  assert abs(e["corr"]) < 0.15  # 400 draws: |r| of independent columns ~ 0.05
  assert abs(e["shared_D"]).max() < 0.35  # the mean of two N(0, 0.1) deviations
  assert np.isnan(eval_draw_study.draw_effects(fd_DR[:, :1])["corr"])  # one run: undefined


def test_the_script_trains_and_scores_every_run_under_every_draw(tmp_path, monkeypatch, capsys):
  out = tmp_path / "draws.jsonl"
  argv = ["eval_draw_study.py", f"--config={os.path.join(ROOT, 'configs', 'test.py')}"]
  argv += ["--steps=3", "--score_steps=1,3", "--seeds=0,1", "--draws=5,6", "--num_samples=16"]
  monkeypatch.setattr(sys, "argv", [*argv, f"--out={out}"])
  eval_draw_study.main()
  recs = [json.loads(line) for line in out.read_text().splitlines()]
  want = [(t, d, s) for t in (1, 3) for d in (5, 6) for s in (0, 1)]
  assert [(r["step"], r["draw"], r["seed"]) for r in recs] == want
  assert all(np.isfinite(r["fd"]) for r in recs)
  fd = {(r["step"], r["draw"], r["seed"]): r["fd"] for r in recs}
  assert fd[(1, 5, 0)] != fd[(3, 5, 0)]  # trained on between the two scored steps
  harness = compare_schedules.parse([argv[1], "--steps=3", "--seeds=0,1", "--out=unused"])
  harness_config = compare_schedules.make_config(harness, "continuous", {})  # same hash
  assert {r["config_hash"] for r in recs} == {compare_schedules.config_hash(harness_config)}
  assert capsys.readouterr().out.count("correlation of the runs' deviations") == 2
  monkeypatch.setattr(sys, "argv", [*argv[:-4], "--score_steps=4", "--steps=3"])
  with pytest.raises(SystemExit):  # a scored step past the budget: refused before training
    eval_draw_study.main()


def test_kept_samples_score_in_chunks_real_data_near_the_floor_noise_far(tmp_path):
  """--kept on constructed sample files of the digits data (binarized, as the harness keeps
  them: decoded to the two levels, uint8, with the record of their data): real images score
  near the FD of real images, noise far above; every whole chunk is scored; the harness's
  records of the same run join the row."""
  from infonoise_jax.data import load_source
  from infonoise_jax.evaluation import images

  config = eval_draw_study.compare_schedules.make_config(
    argparse.Namespace(config="configs/default.py", set=None, steps=10), "binarized", {}, ""
  )
  source = load_source(config)
  ref = compare_schedules.reference(config, source)
  sc = source.scale
  real = source.array[:500]  # already at the two levels
  rng = np.random.default_rng(0)
  noise = np.where(rng.random(real.shape) > 0.5, sc, -sc)
  kept = {"a__seed0__step5": images.to_uint8(real, (-sc, sc))}
  kept["a__seed1__step5"] = images.to_uint8(noise, (-sc, sc))
  from infonoise_jax.data.sources import SAMPLES_DATA_KEY, data_identity

  record = np.array(json.dumps(data_identity(config.data)))  # as the harness writes its files
  np.savez(tmp_path / "final_binarized_a.npz", **kept, **{SAMPLES_DATA_KEY: record})
  results = tmp_path / "results.jsonl"
  rec = {"kind": "eval", "arm": "a", "seed": 0, "step": 5, "fd": 9.0, "fd_decoded": 1.5}
  results.write_text(json.dumps(rec | {"resample": False}) + "\n")
  rows = eval_draw_study.kept_table(
    [str(tmp_path / "final_binarized_a.npz")], source, ref, 200, str(results)
  )
  by = {r["key"]: r for r in rows}
  assert [len(r["fd_chunks"]) for r in rows] == [2, 2]  # 500 samples: two whole chunks of 200
  floor = compare_schedules.frechet(real[200:400].astype(np.float64), ref)
  assert by["a__seed0__step5"]["fd_chunks"][1] == pytest.approx(floor, rel=1e-6)  # lossless
  assert min(by["a__seed1__step5"]["fd_chunks"]) > 10 * max(by["a__seed0__step5"]["fd_chunks"])
  assert by["a__seed0__step5"]["harness"] == 1.5  # the decoded metric, as the kept samples are
  assert (
    by["a__seed1__step5"]["harness"] is None and by["a__seed0__step5"]["harness_resampled"] is None
  )
  np.savez(tmp_path / "other.npz", samples=kept["a__seed0__step5"])
  with pytest.raises(ValueError, match="not named <arm>__seed<k>__step<N>"):
    eval_draw_study.kept_table([str(tmp_path / "other.npz")], source, ref, 200)


def test_uint8_round_trip_is_within_half_a_level_and_exact_at_the_two_levels():
  from infonoise_jax.evaluation import images

  x = np.linspace(-0.5, 0.5, 1001, dtype=np.float32)
  back = images.from_uint8(images.to_uint8(x, (-0.5, 0.5)), (-0.5, 0.5))
  assert np.abs(back - x).max() <= 0.25 / 127.5 + 1e-6  # half a level: 1/127.5 x 0.5 / 2
  np.testing.assert_array_equal(
    images.from_uint8(np.array([0, 255], np.uint8), (-0.5, 0.5)), [-0.5, 0.5]
  )
