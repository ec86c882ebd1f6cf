"""Run-directory paths, local or remote (`gs://bucket/run`), through `etils.epath`.

Every file a run writes or reads (checkpoints via Orbax, config.json, the resume history,
samples, images, fid.json; TensorBoard events via `writers.py`) goes through these paths, so
a remote URL is never turned into a local path (`os.path.abspath("gs://b/r")` would give
`<cwd>/gs:/b/r`). Remote filesystems come from fsspec (gcsfs for `gs://`; with TensorFlow
installed, epath uses tf.io.gfile instead).
"""

import os

from etils import epath


def is_remote(path: str | os.PathLike) -> bool:
  """True for a URL with a scheme other than file:// (gs://, s3://, ...)."""
  scheme, sep, _ = str(path).partition("://")
  return bool(sep) and scheme != "file"


def run_path(path: str | os.PathLike) -> epath.Path:
  """`path` as an epath.Path: remote URLs as they are, local paths made absolute."""
  if is_remote(path):
    return epath.Path(str(path))
  return epath.Path(os.path.abspath(os.path.expanduser(str(path))))
