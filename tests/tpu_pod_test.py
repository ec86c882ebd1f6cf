"""experiments/tpu_pod.sh run against a stand-in `gcloud` that runs each worker's command in
a local folder (the worker's home): what a launch leaves on a worker, and what a second
launch (a requeue, or sampling beside a running training) reuses instead of removing."""

import os
import pathlib
import stat
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "tpu_pod.sh"

GCLOUD = """#!/usr/bin/env bash
# gcloud compute tpus tpu-vm scp SRC TPU:DEST ... | ssh TPU ... --command CMD
set -e
if [ "$4" = scp ]; then
  dest=${6#*:}; dest=${dest/#\\~/$WORKER_HOME}
  mkdir -p "$(dirname "$dest")"; [ -d "$dest" ] && dest=$dest/$(basename "$5"); cp "$5" "$dest"
  exit 0
fi
while [ "$1" != --command ]; do shift; done
cd "$WORKER_HOME" && HOME=$WORKER_HOME bash -c "$2"
"""


def _executable(path: pathlib.Path, text: str) -> None:
  path.write_text(text)
  path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _launch(tmp: pathlib.Path, *args: str, cwd=ROOT, script=SCRIPT) -> subprocess.CompletedProcess:
  env = {
    **os.environ,
    "PATH": f"{tmp / 'bin'}:{os.environ['PATH']}",
    "WORKER_HOME": str(tmp / "worker"),
    "TPU": "pod",
    "ZONE": "zone",
    "WORKDIR": "gs://bucket/run",
    "HOME": str(tmp / "local"),
  }
  return subprocess.run(
    ["bash", str(script), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
  )


def test_a_second_launch_reuses_the_code_and_venv_and_removes_neither(tmp_path):
  (tmp_path / "bin").mkdir()
  _executable(tmp_path / "bin" / "gcloud", GCLOUD)
  worker = tmp_path / "worker"
  venv = worker / "infonoise_venv" / "bin"
  venv.mkdir(parents=True)
  # the venv's pip and python stand in for the real ones: they record how (and where) they
  # were called
  _executable(venv / "pip", f'#!/usr/bin/env bash\necho "$*" >> {worker}/pip_calls\n')
  _executable(venv / "python", f'#!/usr/bin/env bash\necho "$PWD: $*" >> {worker}/commands\n')
  first = _launch(tmp_path, "train", "configs/cifar10_infonoise.py", "--config.seed=3")
  assert first.returncode == 0, first.stderr[-2000:]
  (code,) = worker.glob("infonoise_jax_*[!z]")  # the commit's code, unpacked
  assert (code / "infonoise_jax" / "train.py").exists() and (code / ".unpacked").exists()
  marker = code / "keep_me"  # stands for a running job's use of the folder
  marker.write_text("")
  second = _launch(tmp_path, "sample", "--num=8")
  assert second.returncode == 0, second.stderr[-2000:]
  assert marker.exists()  # not unpacked again over the running job
  deadline = time.time() + 30
  while time.time() < deadline and len((worker / "commands").read_text().splitlines()) < 2:
    time.sleep(0.1)  # the commands are started detached (nohup ... &)
  commands = (worker / "commands").read_text().splitlines()
  assert commands == [  # from the commit's folder: its own code, not the venv's copy
    f"{code}: -m infonoise_jax.main --config=configs/cifar10_infonoise.py "
    "--workdir=gs://bucket/run --config.system.distributed=True --config.seed=3",
    f"{code}: -m infonoise_jax.sample --workdir=gs://bucket/run --distributed --num=8",
  ]
  (install,) = (worker / "pip_calls").read_text().splitlines()  # once per commit
  assert "install" in install and ".[gcs]" in install and "jax[tpu]==" in install


def test_help_needs_no_settings_and_evaluate_warns_without_weights(tmp_path):
  help_ = subprocess.run(
    ["bash", str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60, env={}
  )
  assert help_.returncode == 0 and "TPU=my-v4-32" in help_.stdout
  (tmp_path / "bin").mkdir()
  _executable(tmp_path / "bin" / "gcloud", "#!/usr/bin/env bash\nexit 0\n")
  result = _launch(tmp_path, "evaluate")
  assert result.returncode == 0 and "no FID Inception weights at" in result.stderr


def _worker_with_stub_venv(tmp_path: pathlib.Path) -> pathlib.Path:
  (tmp_path / "bin").mkdir()
  _executable(tmp_path / "bin" / "gcloud", GCLOUD)
  worker = tmp_path / "worker"
  venv = worker / "infonoise_venv" / "bin"
  venv.mkdir(parents=True)
  _executable(venv / "pip", "#!/usr/bin/env bash\n")
  _executable(venv / "python", f'#!/usr/bin/env bash\necho "$*" >> {worker}/commands\necho ran\n')
  return worker


def _commands(worker: pathlib.Path, n: int) -> list[str]:
  deadline = time.time() + 30
  while time.time() < deadline:  # started detached (nohup ... &)
    if (worker / "commands").exists() and len((worker / "commands").read_text().splitlines()) >= n:
      break
    time.sleep(0.1)
  return (worker / "commands").read_text().splitlines()


def test_a_config_of_your_own_or_an_edited_one_is_copied_to_the_workers(tmp_path):
  """The workers get the commit (git archive HEAD): a config file outside the repository (the
  README: "a config file of your own can live anywhere") is copied to every worker and read
  from there, with its variant; an uncommitted edit is warned about, and an edited config of
  the repository is copied as edited. Each worker's log is appended to, attempt by attempt."""
  worker = _worker_with_stub_venv(tmp_path)
  own = tmp_path / "my configs" / "mine.py"
  own.parent.mkdir()
  own.write_text((ROOT / "configs" / "test.py").read_text())
  first = _launch(tmp_path, "train", f"{own}:cpu", "--config.seed=3", cwd=tmp_path)
  assert first.returncode == 0, first.stderr[-2000:]
  assert (worker / "infonoise_configs" / "mine.py").read_text() == own.read_text()
  (command,) = _commands(worker, 1)
  assert command.startswith(
    f"-m infonoise_jax.main --config={worker}/infonoise_configs/mine.py:cpu "
  )
  # a clone with an uncommitted edit to one of its configs
  clone = tmp_path / "clone"
  subprocess.run(["git", "clone", "-q", "--depth=1", f"file://{ROOT}", str(clone)], check=True)
  (clone / "experiments" / "tpu_pod.sh").write_text(SCRIPT.read_text())  # this checkout's
  edited = clone / "configs" / "test.py"
  edited.write_text(edited.read_text() + "\n# edited\n")
  second = _launch(
    tmp_path, "train", "configs/test.py", cwd=clone, script=clone / "experiments" / "tpu_pod.sh"
  )
  assert second.returncode == 0, second.stderr[-2000:]
  assert "uncommitted changes to tracked files" in second.stderr
  assert (worker / "infonoise_configs" / "test.py").read_text().endswith("# edited\n")
  assert _commands(worker, 2)[1].startswith(
    f"-m infonoise_jax.main --config={worker}/infonoise_configs/test.py "
  )
  (log,) = worker.glob("infonoise_train_*.log")
  assert log.read_text().count("== ") == 2 and log.read_text().count("ran") == 2  # appended


def test_a_process_id_outside_the_process_count_is_refused_before_connecting(monkeypatch):
  """A process id >= num_processes waited in initialize() (minutes) instead of being named."""
  import jax
  import ml_collections

  from infonoise_jax import mesh

  monkeypatch.setattr(jax.distributed, "initialize", lambda **k: pytest.fail("connected"))
  system = {"distributed": True, "coordinator_address": "host:1234", "num_processes": 2}
  config = ml_collections.ConfigDict({"system": {**system, "process_id": 2}})
  with pytest.raises(ValueError, match=r"process_id=2 with system.num_processes=2: .* 0 to 1"):
    mesh.initialize_distributed(config)
