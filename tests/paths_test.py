"""Remote run directories: every writer keeps `gs://...` as a URL and writes through it.

The stand-in for Cloud Storage is fsspec's in-memory filesystem registered under the `gs`
protocol, which is what `etils.epath` (and our TensorBoard writer) ask fsspec for; nothing
here touches the network. The test runs in an empty directory and checks that no local
`gs:` folder appeared (what `os.path.abspath("gs://b/r")` used to produce).
"""

import io

import fsspec
import numpy as np
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from infonoise_jax import checkpointing, paths, restore, resume, sample_files, writers
from infonoise_jax import workdir as workdir_lib
from infonoise_jax.evaluation import plots
from infonoise_jax.validation import default_config

RUN = "gs://bucket/run"


class FakeGCS(MemoryFileSystem):
  """In-memory files addressed as gs://bucket/path."""

  protocol = ("gs",)
  store: dict = {}  # noqa: RUF012 - fsspec's class-level store, separate from memory://
  pseudo_dirs = [""]  # noqa: RUF012

  @classmethod
  def _strip_protocol(cls, path):
    path = str(path)
    return super()._strip_protocol(path[len("gs://") :] if path.startswith("gs://") else path)


@pytest.fixture
def gcs(monkeypatch, tmp_path):
  monkeypatch.setenv("EPATH_USE_TF", "false")  # epath: fsspec even where TF is installed
  monkeypatch.chdir(tmp_path)
  previous = {name: fsspec.registry.get(name) for name in ("gs", "gcs")}
  for name in previous:  # epath asks fsspec for "gcs", our writer for "gs"
    fsspec.register_implementation(name, FakeGCS, clobber=True)
  FakeGCS.store.clear()
  FakeGCS.pseudo_dirs[:] = [""]
  yield fsspec.filesystem("gs")
  for name, cls in previous.items():
    if cls is not None:
      fsspec.register_implementation(name, cls, clobber=True)
  assert not any(p.name.startswith("gs") for p in tmp_path.iterdir())  # nothing local


def test_run_path_keeps_urls_and_makes_local_paths_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert str(paths.run_path(RUN) / "checkpoints") == f"{RUN}/checkpoints"
  assert str(paths.run_path("runs/a")) == str(tmp_path / "runs" / "a")
  assert paths.is_remote("s3://b/x") and not paths.is_remote("file:///x")


def test_config_history_samples_images_and_events_land_in_the_bucket(gcs):
  config = default_config()
  resume.record(config, RUN, 0, {})
  changed = default_config()
  changed.train.num_steps = 10
  accepted = resume.check(changed, RUN, 5)
  assert set(accepted) == {"train.num_steps"}
  resume.record(changed, RUN, 5, accepted)
  resume.record(changed, RUN, 7, {"train.log_every": (100, 50)})
  assert restore.load_config(RUN).train.num_steps == 10
  history = gcs.cat_file(f"{RUN}/config_history.jsonl").decode().splitlines()
  assert len(history) == 2  # appended, although object stores cannot append

  x = np.linspace(-1, 1, 4 * 8 * 8).reshape(4, 8, 8, 1).astype(np.float32)
  written = sample_files.write_samples(f"{RUN}/samples", x, 1.0, True, seed=0, step=5)
  assert written == {"npz": f"{RUN}/samples/samples.npz", "png": f"{RUN}/samples/samples.png"}
  with np.load(io.BytesIO(gcs.cat_file(written["npz"]))) as f:
    np.testing.assert_array_equal(f["samples"], x)
  plots.save_png(f"{RUN}/images/plot.png", np.zeros((4, 4, 3), np.uint8))
  assert gcs.exists(f"{RUN}/images/plot.png")

  writer = writers.TensorBoardXWriter(f"{RUN}/tensorboard")
  writer.write_scalars(1, {"loss": 0.5})
  writer.close()
  (events,) = gcs.ls(f"{RUN}/tensorboard", detail=False)
  assert "tfevents" in events and gcs.cat_file(events)


def test_a_bucket_lock_is_refused_while_its_heartbeat_lives_and_taken_over_after(gcs):
  """On gs:// no pid can be checked: a lock left by a run killed outright used to block every
  requeue until removed by hand; now only while its heartbeat is fresh."""
  import json
  import time

  fresh = {"host": "another-vm", "pid": 999999, "started": "then", "beat": time.time()}
  gcs.pipe_file(f"{RUN}/run.lock", json.dumps(fresh).encode())
  with pytest.raises(workdir_lib.WorkdirLockedError, match="pid 999999 on host another-vm"):
    workdir_lib.Lock(RUN).acquire()
  stale = {**fresh, "beat": time.time() - workdir_lib.STALE_AFTER_S - 1}
  gcs.pipe_file(f"{RUN}/run.lock", json.dumps(stale).encode())
  with workdir_lib.Lock(RUN):
    assert json.loads(gcs.cat_file(f"{RUN}/run.lock"))["pid"] != 999999
  assert not gcs.exists(f"{RUN}/run.lock")


def test_a_runs_config_json_in_the_bucket_is_a_config(gcs):
  """--config=gs://.../config.json: the path is not split at its scheme's colon, and the
  file is read from the bucket."""
  from infonoise_jax import main
  from infonoise_jax.validation import load_config_file

  config = default_config("lognormal")
  gcs.pipe_file(f"{RUN}/config.json", config.to_json_best_effort().encode())
  resolved = main._resolve_config_arg(["main", f"--config={RUN}/config.json"])[1]
  assert resolved.endswith(f"run_json.py:{RUN}/config.json")
  assert load_config_file(f"{RUN}/config.json").to_dict() == config.to_dict()


def test_checkpoint_directory_stays_remote(gcs, monkeypatch):
  assert checkpointing.saved_steps(RUN) == []
  gcs.mkdir(f"{RUN}/checkpoints/4")
  gcs.pipe_file(f"{RUN}/checkpoints/4/marker", b"")
  gcs.pipe_file(f"{RUN}/checkpoints/8.orbax-checkpoint-tmp/marker", b"")
  assert checkpointing.saved_steps(RUN) == [4]
  # Orbax itself needs google-cloud-storage for gs:// (the `gcs` extra); here only the
  # directory it is handed is checked.
  given = []
  monkeypatch.setattr(
    checkpointing.ocp, "CheckpointManager", lambda directory, **kw: given.append(directory)
  )
  ckpt = checkpointing.Checkpointer(RUN, keep=3, create=False)
  assert ckpt.directory == given[0] == f"{RUN}/checkpoints"
  assert gcs.exists(f"{RUN}/checkpoints/8.orbax-checkpoint-tmp/marker")  # a reader leaves it
  checkpointing.Checkpointer(RUN, keep=3)  # the trainer removes a killed save's leftover
  assert not gcs.exists(f"{RUN}/checkpoints/8.orbax-checkpoint-tmp/marker")
  assert gcs.exists(f"{RUN}/checkpoints/4/marker")


def test_an_earlier_attempts_logs_are_cut_and_moved_aside_in_the_bucket(gcs, tmp_path):
  """A resume from an older checkpoint on gs:// takes the later steps out of the event files
  (TensorBoard's own reader sees steps 1..3; the originals, 1..6, are kept aside), and a
  --fresh start moves the logs aside file by file."""
  from tensorboard.backend.event_processing import event_file_loader

  writer = writers.TensorBoardXWriter(f"{RUN}/tensorboard")
  for step in range(1, 7):
    writer.write_scalars(step, {"loss": 1.0 / step})
  writer.close()

  def steps(url: str) -> list[int]:
    local = tmp_path / "copy.tfevents"  # TensorBoard's reader reads local files
    local.write_bytes(gcs.cat_file(url))
    return [e.step for e in event_file_loader.EventFileLoader(str(local)).Load() if e.summary.value]

  assert workdir_lib.has_event_files(RUN)
  with pytest.raises(workdir_lib.WorkdirError, match="TensorBoard logs .* but no checkpoint"):
    workdir_lib.check_start(RUN, [], fresh=False)
  assert workdir_lib.drop_events_after(RUN, 6) is None  # nothing after step 6
  aside = workdir_lib.drop_events_after(RUN, 3)
  assert aside.startswith(f"{RUN}/tensorboard.after-3-")
  (events,) = gcs.ls(f"{RUN}/tensorboard", detail=False)
  (original,) = gcs.ls(aside, detail=False)
  assert steps(events) == [1, 2, 3] and steps(original) == [1, 2, 3, 4, 5, 6]
  assert workdir_lib.drop_events_after(RUN, 3) is None  # cut once

  workdir_lib.check_start(RUN, [], fresh=True)
  assert not workdir_lib.has_event_files(RUN)
  (before,) = [p for p in gcs.ls(RUN, detail=False) if "/tensorboard.before-" in p]
  (moved,) = gcs.ls(before, detail=False)
  assert steps(moved) == [1, 2, 3]


def test_event_records_stop_at_a_torn_or_garbled_record():
  """The records read back are the framed ones, up to a record cut short or a length whose
  checksum fails (what a kill mid-write leaves)."""
  records = [b"first", b"", b"third record"]
  data = b"".join(workdir_lib._framed(r) for r in records)
  assert workdir_lib._records(data) == records
  assert workdir_lib._records(data[:-3]) == records[:2]  # the last one torn
  garbled = bytearray(data)
  garbled[len(workdir_lib._framed(b"first")) + 2] ^= 1  # the second record's length
  assert workdir_lib._records(bytes(garbled)) == records[:1]
