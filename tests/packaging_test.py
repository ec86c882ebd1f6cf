"""The project as a user installs it: a wheel and an editable install, each in a throwaway venv.

The venvs see this environment's installed requirements through a .pth file (so the test
does not download; `--no-deps --no-build-isolation`), and the project is built from a copy
of the source tree (the build leaves `build/` and `*.egg-info` behind). The installed
commands then run from a directory that holds no source: configs are found in the package.
"""

import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(
  ".venv", ".git", ".whl", ".site", "runs", "build", "*.egg-info", "__pycache__", ".*_cache"
)


def _run(cmd, cwd, **kw) -> subprocess.CompletedProcess:
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
  env.update(JAX_PLATFORMS="cpu", PYTHONNOUSERSITE="1")
  env["XLA_FLAGS"] = os.environ.get("INFONOISE_TEST_XLA_FLAGS", "")  # the session's (conftest)
  r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, **kw)
  assert r.returncode == 0, (
    f"{cmd} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
  )
  return r


def _venv(path: pathlib.Path) -> pathlib.Path:
  """A venv without pip that sees this environment's site-packages; returns its python."""
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
  python = path / "bin" / "python"
  purelib = subprocess.run(
    [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
    capture_output=True,
    text=True,
    check=True,
  ).stdout.strip()
  pathlib.Path(purelib, "shared_requirements.pth").write_text(sysconfig.get_paths()["purelib"])
  return python


def _pip(python: pathlib.Path, *args: str, cwd) -> None:
  _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", *args], cwd=cwd)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> pathlib.Path:
  src = tmp_path_factory.mktemp("src") / "infonoise_jax_src"
  shutil.copytree(ROOT, src, ignore=SKIP)
  return src


@pytest.fixture(scope="module")
def wheel(source, tmp_path_factory) -> pathlib.Path:
  out = tmp_path_factory.mktemp("wheel")
  cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
  _run([*cmd, "-w", str(out), "."], cwd=source)
  (path,) = out.glob("infonoise_jax-*.whl")
  return path


def test_wheel_holds_the_package_and_its_configs_only(wheel):
  archive = zipfile.ZipFile(wheel)
  names = archive.namelist()
  top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
  assert top == {"infonoise_jax"}
  for config in ("default.py", "test.py", "cifar10_edm.py", "cifar10_infonoise.py"):
    assert f"infonoise_jax/configs/{config}" in names
  for package in ROOT.joinpath("infonoise_jax").rglob("__init__.py"):  # every subpackage
    assert package.relative_to(ROOT).as_posix() in names
  read = lambda suffix: next(archive.read(n).decode() for n in names if n.endswith(suffix))
  assert "Requires-Dist: jax>=" in read("METADATA") and "Requires-Dist: clu" in read("METADATA")
  for script in ("infonoise-train", "infonoise-sample", "infonoise-evaluate"):
    assert script in read("entry_points.txt")


def test_installed_commands_run_from_another_directory(wheel, tmp_path):
  python = _venv(tmp_path / "venv")
  _pip(python, "--no-deps", str(wheel), cwd=tmp_path)
  train, bindir = python.parent / "infonoise-train", python.parent
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  # A shipped config by its checkout-relative name, from a directory without it (README).
  overrides = ["--config.train.num_steps=4", "--config.train.num_samples=4"]
  _run([train, "--config=configs/test.py:lognormal", "--workdir=run", *overrides], cwd=elsewhere)
  assert (elsewhere / "run" / "checkpoints" / "4").is_dir()
  r = _run([bindir / "infonoise-sample", "--workdir=run", "--num=4"], cwd=elsewhere)
  assert "samples.npz" in r.stdout
  where = _run([python, "-c", "import infonoise_jax; print(infonoise_jax.__file__)"], cwd=elsewhere)
  assert str(tmp_path / "venv") in where.stdout  # the installed copy ran, not this checkout

  # A config of one's own elsewhere on disk, built on the shipped default: it loads and
  # passes the key check (num_steps=0 then stops it in validation, before any compile).
  mine = tmp_path / "my_configs" / "tiny.py"
  mine.parent.mkdir()
  mine.write_text(
    "from infonoise_jax.validation import default_config\n\n\n"
    "def get_config():\n"
    "  c = default_config('lognormal')\n"
    "  c.model.hidden_dims = (16,)\n"
    "  return c\n"
  )
  r = subprocess.run(
    [train, f"--config={mine}", "--workdir=run2", "--config.train.num_steps=0"],
    cwd=elsewhere,
    capture_output=True,
    text=True,
  )
  assert "config.train.num_steps: must be >= 1" in r.stderr, r.stderr[-2000:]
  # A config path that is neither a file nor shipped: named, with the shipped ones, no run.
  r = subprocess.run(
    [train, "--config=nowhere/nothing.py", "--workdir=run3"],
    cwd=elsewhere,
    capture_output=True,
    text=True,
  )
  assert r.returncode != 0
  assert "nowhere/nothing.py" in r.stderr and "default.py" in r.stderr
  assert not (elsewhere / "run3").exists()


def test_editable_install_finds_the_checkout_configs(source, tmp_path):
  python = _venv(tmp_path / "venv")
  _pip(python, "--no-deps", "--no-build-isolation", "-e", str(source), cwd=tmp_path)
  code = "from infonoise_jax.validation import config_dir; print(config_dir().resolve())"
  r = _run([python, "-c", code], cwd=tmp_path)
  assert r.stdout.strip() == str((source / "configs").resolve())
