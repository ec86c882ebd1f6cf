"""The files a data folder holds: one walk for every source that reads a folder.

A folder is read with its subfolders: each folder's files in sorted order, then its subfolders
in sorted order (linked folders followed once; hidden files and folders left out). A source
keeps the files its reader takes (by name, case-insensitively) and names the rest in one
warning, so that a file it cannot read is never dropped without a word.
"""

import os
from collections.abc import Callable

from absl import logging


def files_under(folder: str, keep: Callable[[str], bool]) -> tuple[list[str], list[str]]:
  """(kept, skipped) paths under `folder` in reading order; `keep(path)` picks the kept ones."""
  kept, skipped, seen = [], [], set()
  for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
    real = os.path.realpath(dirpath)
    if real in seen:  # a link back to a folder already read
      dirnames[:] = []
      continue
    seen.add(real)
    dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
    for name in sorted(f for f in filenames if not f.startswith(".")):
      path = os.path.join(dirpath, name)
      (kept if keep(path) else skipped).append(path)
  return kept, skipped


def warn_skipped(folder: str, skipped: list[str], what: str) -> None:
  """One warning naming the files under `folder` a source does not read (`what`: the kinds it
  reads), the first few by path relative to the folder."""
  if not skipped:
    return
  names = [os.path.relpath(p, folder) for p in skipped[:5]]
  more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
  logging.warning(
    "data.path=%r: %d file%s left out, not %s: %s%s",
    folder, len(skipped), "" if len(skipped) == 1 else "s", what, ", ".join(names), more,
  )  # fmt: skip
