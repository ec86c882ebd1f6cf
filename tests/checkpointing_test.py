"""Tests of checkpointing.py on its own: save/restore round trip, meta, config.json loading."""

import json

import pytest

from configs import default
from infonoise_jax import checkpointing


def _write_config(workdir, d: dict) -> None:
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "config.json").write_text(json.dumps(d))


def test_load_config_reads_what_the_trainer_writes(tmp_path):
  config = default.get_config("cdcd")
  config.train.num_steps = 123
  _write_config(tmp_path, json.loads(config.to_json_best_effort()))
  loaded = checkpointing.load_config(str(tmp_path))
  assert loaded.to_dict() == config.to_dict()  # tuples come back as tuples
  assert loaded.model.hidden_dims == (512, 512, 512)


def test_old_config_json_with_an_infonoise_sigma_range_is_migrated(tmp_path):
  d = json.loads(default.get_config().to_json_best_effort())
  d["schedule"]["infonoise"].update(sigma_min=0.002, sigma_max=80.0)  # written before the merge
  _write_config(tmp_path / "same", d)
  loaded = checkpointing.load_config(str(tmp_path / "same"))
  assert "sigma_min" not in loaded.schedule.infonoise
  assert (loaded.edm.sigma_min, loaded.edm.sigma_max) == (0.002, 80.0)
  d["schedule"]["infonoise"].update(sigma_min=0.01, sigma_max=80.0)
  _write_config(tmp_path / "differs", d)
  with pytest.raises(ValueError, match=r"schedule\.infonoise\.sigma_min = 0\.01 differs"):
    checkpointing.load_config(str(tmp_path / "differs"))


def test_load_config_errors_name_the_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json not found"):
    checkpointing.load_config(str(tmp_path))
  d = json.loads(default.get_config().to_json_best_effort())
  d["train"]["num_stepz"] = 3
  _write_config(tmp_path, d)
  with pytest.raises(ValueError, match="num_stepz"):
    checkpointing.load_config(str(tmp_path))
