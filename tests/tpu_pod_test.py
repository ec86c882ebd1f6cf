"""experiments/tpu_pod.sh run against a stand-in `gcloud` that runs each worker's command in
a local folder (the worker's home): what a launch leaves on a worker, and what a second
launch (a requeue, or sampling beside a running training) reuses instead of removing."""

import os
import pathlib
import stat
import subprocess
import time

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


def _launch(tmp: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
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
    ["bash", str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
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
