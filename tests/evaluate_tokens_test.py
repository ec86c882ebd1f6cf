"""The evaluate command on token runs (evaluate.evaluate_tokens): the domain metrics of the
samples the sample command draws against held-out windows, their floor, domain_metrics.json,
and the errors that come before any weights are restored or samples drawn."""

import json
import os
import pathlib
import shutil

import numpy as np
import pytest

from infonoise_jax import diagnose, evaluate, restore, sample, train
from infonoise_jax.data import load_source
from infonoise_jax.evaluation.sequence_eval import SequenceEvaluator
from infonoise_jax.validation import load_config_file

ROOT = pathlib.Path(__file__).resolve().parents[1]
N = 8  # samples per seed set, and held-out windows (one per fake device)


def _tiny(domain: str, path: pathlib.Path, cache: pathlib.Path):
  """A 1-step run of a one-block transformer on 16-token windows of `path`."""
  c = load_config_file(ROOT / "configs" / f"{domain}.py", "cpu")
  c.data.path, c.data.seq_len = str(path), 16
  c.model.width, c.model.depth, c.model.num_heads = 16, 1, 2
  c.train.batch_size, c.train.num_steps, c.train.checkpoint_every = 8, 1, 1
  c.train.eval_every = c.train.sample_every = 0
  c.train.num_samples, c.train.eval_num_samples, c.sampler.num_steps = N, N, 3
  c.seq_metrics.classifier_steps, c.seq_metrics.classifier_width = 5, 8
  c.seq_metrics.cache_dir = str(cache)
  return c


@pytest.fixture(scope="module")
def dna_run(tmp_path_factory) -> str:
  """A DNA run on 40 random records (4 held out: 40 held-out windows of 16 bases)."""
  tmp = tmp_path_factory.mktemp("dna")
  rng = np.random.default_rng(0)
  fasta = tmp / "seq.fa"
  fasta.write_text("".join(f">r{i}\n{''.join(rng.choice(list('ACGT'), 160))}\n" for i in range(40)))
  workdir = str(tmp / "run")
  train.train_and_evaluate(_tiny("dna", fasta, tmp / "clf"), workdir)
  return workdir


def _no_sampling(monkeypatch):
  """Restoring the weights (which comes before any sampling) fails the test."""

  def restore_run(*args, **kwargs):
    raise AssertionError("restored the weights before the error")

  monkeypatch.setattr(restore, "restore_run", restore_run)


def test_evaluate_writes_the_domain_metrics_of_the_sample_commands_samples(
  dna_run, tmp_path, capsys
):
  evaluate.main([f"--workdir={dna_run}", f"--num={N}", "--seed_sets=2"])
  stored = json.loads(pathlib.Path(dna_run, "domain_metrics.json").read_text())
  out = capsys.readouterr().out  # progress lines, the JSON, where it was written
  result = json.loads(out[out.index("\n{") + 1 : out.rindex("written to")])
  assert {k: v for k, v in stored.items() if k != "results"} == result  # the latest, on top
  assert stored["results"] == [result]  # (earlier evaluations are kept as fid.json's are)
  assert "seed set 0: frechet" in out and "seed set 1: frechet" in out
  assert f"written to {dna_run}/domain_metrics.json" in out
  assert not pathlib.Path(dna_run, "fid.json").exists()
  assert result["data"] == "dna" and result["seeds"] == [0, 1] and result["num_samples"] == N
  assert result["checkpoint_step"] == 1
  assert result["sampler"] == {
    "method": "heun", "grid": "karras", "num_steps": 3, "network_evaluations": 5, "rho": 7.0
  }  # fmt: skip
  metrics, primary = result["metrics"], result["primary"]
  assert primary == "frechet" and len(metrics) == 2 and metrics[0] != metrics[1]
  assert {"kmer_js_3", "kmer_js_6", "gc_w1", "frechet"} <= set(metrics[0])
  assert result["primary_values"] == [m["frechet"] for m in metrics]
  assert result["primary_mean"] == pytest.approx(np.mean(result["primary_values"]))
  # Independently: SequenceEvaluator on the run's config and data, fed the samples the sample
  # command writes for seed 1 (read back from its .npz).
  config = restore.load_config(dna_run)
  config.train.eval_num_samples = N
  evaluator = SequenceEvaluator(config, load_source(config))
  paths = sample.sample_run(dna_run, N, str(tmp_path / "drawn"), seed=1).paths
  samples_NLV = np.load(paths["npz"])["samples"]
  assert metrics[1] == evaluator.metrics(samples_NLV)
  assert result["floor"] == evaluator.floor()
  assert result["floor"]["frechet"] < metrics[0]["frechet"]  # a 1-step model is far from it


def test_fid_flags_on_a_token_run_are_refused_before_sampling(dna_run, monkeypatch, capsys):
  _no_sampling(monkeypatch)
  with pytest.raises(ValueError, match=r"--weights: FID settings, but .* token data \(data.name="):
    evaluate.evaluate(dna_run, num=N, weights="/nonexistent/inception.npz")
  with pytest.raises(SystemExit):
    evaluate.main([f"--workdir={dna_run}", f"--num={N}", "--ref_stats=s.npz", "--weights=w.npz"])
  assert "--ref_stats and --weights: FID settings" in capsys.readouterr().err


def _copy_run(workdir: str, dest: pathlib.Path, **data) -> str:
  """The run's config and checkpoints, its config.json's data.* keys replaced by `data`."""
  shutil.copytree(workdir, dest, ignore=shutil.ignore_patterns("tensorboard", "*.npz", "*.fa"))
  config = json.loads((dest / "config.json").read_text())
  config["data"].update(data)
  (dest / "config.json").write_text(json.dumps(config))
  return str(dest)


def test_missing_data_or_too_few_held_out_windows_are_refused_before_sampling(
  dna_run, tmp_path, monkeypatch
):
  _no_sampling(monkeypatch)
  moved = _copy_run(dna_run, tmp_path / "moved", path=str(tmp_path / "gone.fa"))
  with pytest.raises(FileNotFoundError, match=r"needs .*gone.fa.*--set data.path=<file>"):
    evaluate.evaluate(moved, num=N)
  # told where the data lies now (relative to here), the data checks pass: the next thing is
  # restoring the weights; other keys of the run stay its own
  data = json.loads(pathlib.Path(dna_run, "config.json").read_text())["data"]["path"]
  monkeypatch.chdir(os.path.dirname(data))
  with pytest.raises(AssertionError, match="restored the weights"):
    evaluate.evaluate(moved, num=N, overrides=[f"data.path={os.path.basename(data)}"])
  with pytest.raises(ValueError, match=r"--set model.width=8: .* and where the run's data now"):
    evaluate.evaluate(moved, num=N, overrides=["model.width=8", f"data.path={data}"])
  with pytest.raises(ValueError, match=r"--num=21: .* 2 x 21 held-out windows .* gives 40"):
    evaluate.evaluate(dna_run, num=21)


def test_data_giving_another_vocabulary_is_refused_before_sampling(tmp_path, monkeypatch, capsys):
  rng = np.random.default_rng(0)
  text = tmp_path / "text.txt"
  text.write_text("".join(rng.choice(list("abcdefg "), 2000)))
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(_tiny("text", text, tmp_path / "clf"), workdir)
  text.write_text("xyz " + text.read_text())  # the training split gains three letters
  _no_sampling(monkeypatch)
  want = r"vocabulary ' abcdefg', .* 11 symbols ' abcdefgxyz' \(.*only in the new: 'xyz'\)"
  with pytest.raises(ValueError, match=want):
    evaluate.evaluate(workdir, num=N)
  # diagnose reads the data the same way: other letters are refused before the restore, also
  # when there are as many of them (every id would mean another symbol: same shapes, no error)
  flags = [f"--workdir={workdir}", "--schedules=lognormal", "--num_heldout=8", "--grid_points=8"]
  swapped = tmp_path / "swapped.txt"
  swapped.write_text(text.read_text()[4:].translate(str.maketrans("abcdefg", "hijklmn")))
  for data, says in [(text, "only in the new: 'xyz'"), (swapped, "8 symbols ' hijklmn'")]:
    with pytest.raises(SystemExit):
      diagnose.main([*flags, f"--out={tmp_path / 'd'}", "--set", f"data.path={data}"])
    assert says in capsys.readouterr().err
  # files that only lost letters (as text did a byte-order mark) are scored on the
  # checkpoint's vocabulary, as a resume pins it
  monkeypatch.undo()
  text.write_text(text.read_text()[4:].replace("g", "a"))
  result = evaluate.evaluate(workdir, num=6, seed_sets=1)  # 12 held-out windows
  assert result["num_samples"] == 6 and result["data"] == "text"
  assert np.isfinite(result["primary_mean"])
  diagnose.main([*flags, f"--out={tmp_path / 'd'}"])
  assert (tmp_path / "d" / "diagnose.md").exists()


def test_num_defaults_to_the_runs_eval_num_samples(dna_run):
  """Without --num a token run is scored on train.eval_num_samples samples (its TensorBoard
  domain/ curves' count), not FID's 50,000."""
  assert evaluate.evaluate(dna_run, seed_sets=1)["num_samples"] == N


def test_metric_settings_are_set_at_evaluation_and_recorded(tmp_path, monkeypatch):
  """seq_metrics.* are evaluation settings: a run on 3-token windows, trained without
  evaluation, is scored with --set seq_metrics.ngram_sizes=1,2,3 (the default's 4-grams do not
  fit, as the error says); bad values are refused before the weights are restored; each result
  records its settings, and results under other settings are kept side by side."""
  rng = np.random.default_rng(0)
  text = tmp_path / "text.txt"
  text.write_text("".join(rng.choice(list("abcdefg "), 2000)))
  c = _tiny("text", text, tmp_path / "clf")
  c.data.seq_len = 3
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(c, workdir)
  with monkeypatch.context() as m:
    _no_sampling(m)
    says = r"\(1, 2, 3, 4\): .* --set seq_metrics.ngram_sizes=1,2,3 in evaluate"
    with pytest.raises(ValueError, match=says):
      evaluate.evaluate(workdir, num=N)
    for item, says in [
      ("seq_metrics.ngram_sizes=(1,2.5)", "whole numbers"),
      ("seq_metrics.lm_order=0", "lm_order must be >= 1"),
      ("seq_metrics.ngram_size=2", "no such config key"),
    ]:
      with pytest.raises(ValueError, match=says):
        evaluate.evaluate(workdir, num=N, overrides=["seq_metrics.ngram_sizes=1,2,3", item])
  flags = [f"--workdir={workdir}", f"--num={N}", "--seed_sets=1"]
  evaluate.main([*flags, "--set", "seq_metrics.ngram_sizes=1,2,3"])
  result = evaluate.evaluate(workdir, num=N, seed_sets=1, overrides=["seq_metrics.ngram_sizes=2"])
  assert result["seq_metrics"] == {"ngram_sizes": [2], "lm_order": 4}
  assert result["primary"] == "ngram_js_2" and "ngram_js_3" not in result["metrics"][0]
  stored = json.loads(pathlib.Path(workdir, "domain_metrics.json").read_text())["results"]
  assert [r["seq_metrics"]["ngram_sizes"] for r in stored] == [[1, 2, 3], [2]]
  assert stored[0]["primary"] == "ngram_js_3"
  assert stored[1]["metrics"][0]["ngram_js_2"] == stored[0]["metrics"][0]["ngram_js_2"]


def test_too_little_held_out_text_to_score_at_all_says_so(tmp_path):
  """With fewer than 4 held-out windows no --num can be scored (2 samples and 2 floor windows
  at least): the error says the data is too small, instead of advising '--num=0 or fewer',
  which then failed on 'at least 2 samples'. With 4 or more it names the --num that fits."""
  from infonoise_jax.evaluation import sequence_eval

  rng = np.random.default_rng(0)
  for n, says in ((900, "this data is too small to score"), (3000, "use --num=2 or fewer")):
    path = tmp_path / f"t{n}.txt"
    path.write_text("".join(rng.choice(list("abcd "), n)))
    cfg = load_config_file(ROOT / "configs" / "text.py", "cpu")
    cfg.data.path = str(path)
    with pytest.raises(ValueError, match=says):
      sequence_eval.check_held_out(cfg, 8, "--num")
