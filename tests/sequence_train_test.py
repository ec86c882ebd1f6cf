"""DNA and text end to end through `python -m infonoise_jax.main`: TensorBoard scalars (domain
metrics included), decoded text samples, a checkpoint with the vocabulary, a bit-identical
resume; the transformer shards like the other models; bad token settings fail before compiling."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from infonoise_jax import checkpointing, sample, sample_files, train
from infonoise_jax.data import sequences
from infonoise_jax.data.tokens import TokenEncoding
from infonoise_jax.validation import load_config_file

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _tiny(cache: pathlib.Path) -> dict:
  return {
    "model.width": 32,
    "model.depth": 1,
    "model.num_heads": 2,
    "data.seq_len": 32,
    "train.batch_size": 16,
    "train.num_steps": 8,
    "train.log_every": 2,
    "train.checkpoint_every": 4,
    "train.sample_every": 0,
    "train.num_samples": 8,
    "train.eval_every": 4,
    "train.eval_num_samples": 16,
    "seq_metrics.classifier_steps": 5,
    "seq_metrics.classifier_width": 8,
    "seq_metrics.cache_dir": str(cache),
    "sampler.num_steps": 4,
    "optim.warmup_steps": 2,
    "schedule.infonoise.num_bins": 16,
    "schedule.infonoise.warmup_steps": 2,
    "schedule.infonoise.refresh_every": 2,
    "schedule.infonoise.min_count": 1,
  }


def _config(domain: str, overrides: dict):
  c = load_config_file(ROOT / "configs" / f"{domain}.py", "cpu")
  c.update_from_flattened_dict(overrides)
  return c


def _main(domain: str, workdir: pathlib.Path, overrides: dict) -> None:
  env = {k: v for k, v in os.environ.items() if not k.startswith("XLA_")}
  env.update(JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="8", PYTHONUNBUFFERED="1")
  env["XLA_FLAGS"] = os.environ.get("INFONOISE_TEST_XLA_FLAGS", "")  # the session's (conftest)
  flags = [f"--config.{k}={v}" for k, v in overrides.items()]
  cmd = [sys.executable, "-m", "infonoise_jax.main", f"--config=configs/{domain}.py:cpu"]
  out = subprocess.run(
    [*cmd, f"--workdir={workdir}", *flags], cwd=ROOT, env=env, capture_output=True, text=True
  )
  assert out.returncode == 0, out.stderr[-3000:]
  progress = [line for line in out.stderr.splitlines() if " | loss " in line]
  assert progress and all(" seq/s | " in line for line in progress)  # not img/s


def _tensorboard(workdir: pathlib.Path):
  from tensorboard.backend.event_processing import event_accumulator

  events = sorted((workdir / "tensorboard").glob("events.out.tfevents.*"))
  accs = []
  for e in events:
    acc = event_accumulator.EventAccumulator(str(e), size_guidance={"tensors": 0})
    acc.Reload()
    accs.append(acc)
  tags = set().union(*(set(a.Tags()["scalars"]) | set(a.Tags()["tensors"]) for a in accs))
  return accs, tags


def _straight(config, num_steps: int):
  """The state after `num_steps` uninterrupted train steps (only the step is compiled)."""
  run = train.Run(config, "/tmp/unused")
  state = run.init_fn()
  for step in range(num_steps):
    state, _ = run.train_step(state, run.global_batch(run.pipeline.batch(step)))
  return jax.device_get(state)


# dna: one GenBank file of the kaptive references (16 O-locus records) keeps the test fast
SMALL_DATA = {
  "dna": {"data.path": "/usr/share/kaptive/reference_database/"
          "Klebsiella_o_locus_primary_reference.gbk"},
  "text": {},
}  # fmt: skip


@pytest.mark.parametrize("domain", ["dna", "text"])
def test_end_to_end_through_main_logs_metrics_texts_and_resumes_bit_identically(tmp_path, domain):
  overrides = {**_tiny(tmp_path / "clf"), **SMALL_DATA[domain]}
  resumed = tmp_path / "resumed"
  _main(domain, resumed, {**overrides, "train.num_steps": 4})
  _main(domain, resumed, overrides)  # resumes at step 4
  straight = _straight(_config(domain, overrides), 8)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), straight
  )
  ckpt = checkpointing.Checkpointer(str(resumed), 3, create=False)
  state, meta = ckpt.restore(abstract, 8)
  ckpt.close()
  for a, b in zip(jax.tree.leaves(jax.device_get(state)), jax.tree.leaves(straight), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  _, tags = _tensorboard(resumed)
  assert {"loss", "err_x", "samples"} <= tags
  domain_keys = {"dna": {"kmer_js_3", "kmer_js_6", "gc_w1", "frechet"}, "text": {"ngram_js_1",
                 "ngram_js_4", "nll_per_char"}}[domain]  # fmt: skip
  assert {f"domain/{k}" for k in domain_keys} | {"domain/samples"} <= tags
  config = json.load(open(resumed / "config.json"))
  vocab = np.load(resumed / "samples.npz")["vocab"].item()
  assert meta["vocab"] == vocab
  assert config["edm"]["sigma_data"] == pytest.approx(np.sqrt(len(vocab) - 1) / len(vocab))
  tokens = np.load(resumed / "samples.npz")["tokens"]
  assert tokens.shape == (8, 32) and tokens.max() < len(vocab)
  assert "uint8" not in np.load(resumed / "samples.npz").files  # image quantization: images only
  # the trainer's final samples decoded too, each the decoded tokens of the .npz: DNA as FASTA
  # (read back by the project's own FASTA reader), text after a header line per sample
  texts = [TokenEncoding(vocab).to_text(ids) for ids in tokens]
  if domain == "dna":
    assert not (resumed / "samples.txt").exists()
    records = sequences.read_fasta(str(resumed / "samples.fa"))
    assert records == [(f"sample_{j} seed=0 step=8", t) for j, t in enumerate(texts)]
  else:
    got = sample_files.read_texts(str(resumed / "samples.txt"))
    assert got == [(f"===== sample {j} seed=0 step=8 =====", t) for j, t in enumerate(texts)]
  # the sample command decodes with the checkpoint's vocabulary, without reading the data
  paths = sample.sample_run(str(resumed), 3, str(tmp_path / "drawn"), seed=2).paths
  drawn = np.load(paths["npz"])
  assert drawn["vocab"].item() == vocab and drawn["tokens"].shape == (3, 32)
  if domain == "dna":
    records = sequences.read_fasta(paths["fa"])
    assert [name for name, _ in records] == [f"sample_{j} seed=2 step=8" for j in range(3)]
    assert [seq for _, seq in records] == [TokenEncoding(vocab).to_text(r) for r in drawn["tokens"]]
  else:
    got = sample_files.read_texts(paths["txt"])
    assert [h for h, _ in got] == [f"===== sample {j} seed=2 step=8 =====" for j in range(3)]
    assert [t for _, t in got] == [TokenEncoding(vocab).to_text(r) for r in drawn["tokens"]]


@pytest.mark.parametrize(
  "domain, overrides, key",
  [
    ("dna", {"data.path": "/nonexistent/genome.fa"}, "data.path"),
    ("dna", {"data.seq_len": 10**7}, "data.seq_len"),
    ("dna", {"data.unknown_policy": "ignore"}, "data.unknown_policy"),
    ("text", {"data.vocab": "x"}, "data.vocab"),
    ("text", {"model.num_heads": 5}, "model.num_heads"),
    ("text", {"train.eval_num_samples": 10**7}, "train.eval_num_samples"),
  ],
)
def test_bad_token_input_fails_before_compiling_naming_the_key(tmp_path, domain, overrides, key):
  config = _config(domain, overrides)
  with pytest.raises((ValueError, FileNotFoundError), match=key.replace(".", r"\.")):
    train.train_and_evaluate(config, str(tmp_path / "bad"))
  assert not (tmp_path / "bad" / "checkpoints").exists()


def test_n_gram_sizes_past_the_window_name_the_override_that_fixes_them(tmp_path, monkeypatch):
  """Text at data.seq_len=1 was refused with 'seq_metrics.ngram_sizes must lie in [1, 1]' and
  no fix; the error names the override (the sizes that fit), which the trainer's --config flags
  and --set take."""
  from absl import flags
  from ml_collections import config_flags

  from infonoise_jax.data import load_source
  from infonoise_jax.evaluation.sequence_eval import SequenceEvaluator
  from infonoise_jax.validation import apply_overrides

  for seq_len, sizes in [(1, "1"), (3, "1,2,3")]:
    config = _config("text", {"data.seq_len": seq_len, "train.eval_num_samples": 16})
    with pytest.raises(ValueError, match=r"ngram_sizes=\(1, 2, 3, 4\)") as e:
      train.train_and_evaluate(config, str(tmp_path / "bad"))
    assert not (tmp_path / "bad" / "checkpoints").exists()
    override = f"--config.seq_metrics.ngram_sizes={sizes}"
    fix = f"use {override} in training, --set seq_metrics.ngram_sizes={sizes} in evaluate"
    assert fix in str(e.value)
  # the override at data.seq_len=3 (at 1 every held-out letter is a training window's)
  argv = ["main", f"--config={ROOT}/configs/text.py:cpu", "--config.data.seq_len=3", override]
  monkeypatch.setattr(sys, "argv", argv)  # the trainer's flags (infonoise_jax.main) read it
  flag_values = flags.FlagValues()
  fixed = config_flags.DEFINE_config_file("config", flag_values=flag_values)
  flag_values(argv)
  set_config = config.copy_and_resolve_references()
  apply_overrides(set_config, [f"seq_metrics.ngram_sizes={sizes}"])
  for c in (fixed.value, set_config):
    assert tuple(c.seq_metrics.ngram_sizes) == (1, 2, 3)
    c.train.eval_num_samples = 16
    assert "ngram_js_3" in SequenceEvaluator(c, load_source(c)).floor()


def test_sigma_data_zero_needs_token_data(tmp_path):
  c = load_config_file(ROOT / "configs" / "test.py")
  c.edm.sigma_data = 0.0
  with pytest.raises(ValueError, match=r"edm\.sigma_data"):
    train.train_and_evaluate(c, str(tmp_path / "bad"))


def test_a_resume_on_text_with_other_letters_is_refused(tmp_path):
  """data.path may change on a resume (files move), but text with other letters gives every
  token another id: refused before anything is written, naming the letters; the same letters
  in other files resume."""
  rng = np.random.default_rng(0)
  words = np.array(["alpha", "beta", "gamma", "Delta", "epsilon", "zeta"])
  text = " ".join(rng.choice(words, 3000))
  for name, body in (("a", text), ("same", text[::-1]), ("other", text.replace("D", "Q"))):
    (tmp_path / name).mkdir()
    (tmp_path / name / "t.txt").write_text(body)
  tiny = {**_tiny(tmp_path / "cache"), "train.eval_every": 0, "data.seq_len": 16}
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(
    _config("text", {**tiny, "data.path": str(tmp_path / "a"), "train.num_steps": 4}), workdir
  )
  before = sorted(os.listdir(workdir))
  other = _config("text", {**tiny, "data.path": str(tmp_path / "other")})
  with pytest.raises(ValueError, match="only in the checkpoint's: 'D'; only in the new: 'Q'"):
    train.train_and_evaluate(other, workdir)
  assert sorted(os.listdir(workdir)) == before
  assert checkpointing.saved_steps(workdir) == [4]
  same = _config("text", {**tiny, "data.path": str(tmp_path / "same")})
  assert int(train.train_and_evaluate(same, workdir).step) == 8
  # new letters can be trained over with the checkpoint's vocabulary pinned and the rest
  # replaced (data.vocab, data.unknown_policy: resumable, the vocabulary still checked)
  (tmp_path / "accents").mkdir()
  (tmp_path / "accents" / "t.txt").write_text(text.replace("a", "\u00f1", 50))
  vocab = train.load_source(_config("text", {**tiny, "data.path": str(tmp_path / "a")}))
  pinned = {"data.vocab": vocab.encoding.vocab, "data.unknown_policy": "replace"}
  more = {**tiny, "train.num_steps": 12, "data.path": str(tmp_path / "accents")}
  assert int(train.train_and_evaluate(_config("text", {**more, **pinned}), workdir).step) == 12
  wrong = {**more, **pinned, "data.vocab": vocab.encoding.vocab[::-1]}  # ids change meaning
  with pytest.raises(ValueError, match="the same symbols in another order"):
    train.train_and_evaluate(_config("text", wrong), workdir)


def test_a_resume_on_text_that_lost_letters_goes_on_with_the_checkpoints_vocabulary(tmp_path):
  """Files that give a strict subset of the checkpoint's letters (e.g. a byte-order mark older
  runs took for a letter, now dropped) resume with data.vocab pinned to the checkpoint's: the
  ids keep their meaning, the model its size; config.json records the pin."""
  rng = np.random.default_rng(1)
  words = np.array(["alpha", "beta", "gamma", "Delta", "epsilon", "zeta"])
  text = " ".join(rng.choice(words, 3000))
  (tmp_path / "a").mkdir()
  (tmp_path / "a" / "t.txt").write_text(text)
  (tmp_path / "fewer").mkdir()
  (tmp_path / "fewer" / "t.txt").write_text(text.replace("D", "e"))
  tiny = {**_tiny(tmp_path / "cache"), "train.eval_every": 0, "data.seq_len": 16}
  workdir = tmp_path / "run"
  first = _config("text", {**tiny, "data.path": str(tmp_path / "a"), "train.num_steps": 4})
  train.train_and_evaluate(first, str(workdir))
  saved = train.saved_meta(str(workdir), 4)["vocab"]
  assert "D" in saved
  fewer = _config("text", {**tiny, "data.path": str(tmp_path / "fewer")})
  assert "D" not in train.load_source(fewer.copy_and_resolve_references()).encoding.vocab
  assert int(train.train_and_evaluate(fewer, str(workdir)).step) == 8
  assert train.saved_meta(str(workdir), 8)["vocab"] == saved
  assert json.loads((workdir / "config.json").read_text())["data"]["vocab"] == saved


def test_a_resume_or_evaluation_on_files_that_hold_out_other_sequences_says_so(tmp_path, caplog):
  """Held-out records are picked by a hash of their names, file name included: the run's FASTA
  gzipped (or renamed) held out other records, so a resume trained on windows its evaluations
  had held out, and evaluate scored against windows the model had trained on, without a word.
  The checkpoint records its held-out split; a run on other held-out sequences warns."""
  import gzip

  from infonoise_jax import resume

  rng = np.random.default_rng(2)
  fasta = "".join(f">r{i}\n{''.join(rng.choice(list('ACGT'), 200))}\n" for i in range(20))
  (tmp_path / "genome.fa").write_text(fasta)
  (tmp_path / "genome.fa.gz").write_bytes(gzip.compress(fasta.encode()))
  tiny = {**_tiny(tmp_path / "cache"), "train.eval_every": 0, "train.num_steps": 4}
  workdir = str(tmp_path / "run")
  plain = _config("dna", {**tiny, "data.path": str(tmp_path / "genome.fa")})
  train.train_and_evaluate(plain, workdir)
  meta = train.saved_meta(workdir, 4)
  source = lambda name: train.load_source(
    _config("dna", {**tiny, "data.path": str(tmp_path / name)}).copy_and_resolve_references()
  )
  same, packed = source("genome.fa"), source("genome.fa.gz")
  assert meta["held_out"] == same.stats.held_out_digest != packed.stats.held_out_digest
  with caplog.at_level("WARNING"):
    assert not resume.warn_if_held_out_changed(plain, same, meta, workdir, 4)
    assert resume.warn_if_held_out_changed(plain, packed, meta, workdir, 4)
    caplog.clear()
    more = {**tiny, "train.num_steps": 8, "data.path": str(tmp_path / "genome.fa.gz")}
    assert int(train.train_and_evaluate(_config("dna", more), workdir).step) == 8
  said = [r.getMessage() for r in caplog.records if "holds out other sequences" in r.getMessage()]
  assert len(said) == 1 and "genome.fa.gz" in said[0], said
  assert train.saved_meta(workdir, 8)["held_out"] == packed.stats.held_out_digest
  # another held-out fraction is refused by the config check, without the warning before it
  caplog.clear()
  other = {**more, "train.num_steps": 12, "data.val_fraction": 0.3}
  with caplog.at_level("WARNING"), pytest.raises(ValueError, match="data.val_fraction"):
    train.train_and_evaluate(_config("dna", other), workdir)
  assert not [r for r in caplog.records if "holds out other sequences" in r.getMessage()]


def test_a_byte_order_mark_is_not_a_letter(tmp_path):
  """A UTF-8 file that opens with a BOM (or holds one) reads as the same text without it."""
  from infonoise_jax.data import sequences

  (tmp_path / "bom").mkdir()
  (tmp_path / "plain").mkdir()
  (tmp_path / "bom" / "t.txt").write_bytes("\ufeffTo be,\ufeff or not".encode())
  (tmp_path / "plain" / "t.txt").write_text("To be, or not")
  assert sequences.text_groups(str(tmp_path / "bom"))[0][1] == "To be, or not"
  assert sequences.text_groups(str(tmp_path / "bom")) == sequences.text_groups(
    str(tmp_path / "plain")
  )


def test_a_resume_on_files_with_other_training_sequences_says_so(tmp_path, caplog):
  """A record added to the files (landing in the training split, the held-out one unchanged)
  changes what the run trains on and refits the domain metrics' reference models: the resume
  says so once, and a resume on the same files says nothing."""
  rng = np.random.default_rng(3)
  # 19 records: 2 held out, and still 2 with one more
  records = [f">r{i}\n{''.join(rng.choice(list('ACGT'), 200))}\n" for i in range(19)]
  tiny = {**_tiny(tmp_path / "cache"), "train.eval_every": 0, "train.num_steps": 4}
  source = lambda path: train.load_source(
    _config("dna", {**tiny, "data.path": str(path)}).copy_and_resolve_references()
  )
  (tmp_path / "a").mkdir()
  (tmp_path / "a" / "g.fa").write_text("".join(records))
  before = source(tmp_path / "a").stats
  (tmp_path / "b").mkdir()
  for i in range(100):  # a name the split puts in training, leaving the held-out ones alone
    extra = f">new{i}\n{''.join(rng.choice(list('ACGT'), 200))}\n"
    (tmp_path / "b" / "g.fa").write_text("".join(records) + extra)
    after = source(tmp_path / "b").stats
    if after.held_out_digest == before.held_out_digest:
      break
  assert after.held_out_digest == before.held_out_digest != ""
  assert after.train_digest != before.train_digest != ""
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(_config("dna", {**tiny, "data.path": str(tmp_path / "a")}), workdir)
  assert train.saved_meta(workdir, 4)["trained_on"] == before.train_digest
  said = lambda: [r.getMessage() for r in caplog.records if "other training" in r.getMessage()]
  with caplog.at_level("WARNING"):
    same = {**tiny, "train.num_steps": 6, "data.path": str(tmp_path / "a")}
    train.train_and_evaluate(_config("dna", same), workdir)
    assert not said()
    more = {**tiny, "train.num_steps": 8, "data.path": str(tmp_path / "b")}
    assert int(train.train_and_evaluate(_config("dna", more), workdir).step) == 8
  assert len(said()) == 1 and str(tmp_path / "b") in said()[0], said()
  assert not [r for r in caplog.records if "holds out other sequences" in r.getMessage()]
  assert train.saved_meta(workdir, 8)["trained_on"] == after.train_digest
