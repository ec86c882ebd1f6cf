"""Tests of checkpointing.py on its own: save/restore round trip, meta, config.json loading."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import SingleDeviceSharding

from configs import default
from infonoise_jax import checkpointing, restore, train_state
from infonoise_jax.schedules import InfoNoise


def _write_config(workdir, d: dict) -> None:
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "config.json").write_text(json.dumps(d))


def test_load_config_reads_what_the_trainer_writes(tmp_path):
  config = default.get_config("cdcd")
  config.train.num_steps = 123
  _write_config(tmp_path, json.loads(config.to_json_best_effort()))
  loaded = restore.load_config(str(tmp_path))
  assert loaded.to_dict() == config.to_dict()  # tuples come back as tuples
  assert loaded.model.hidden_dims == (512, 512, 512)


def test_old_config_json_with_an_infonoise_sigma_range_is_migrated(tmp_path):
  d = json.loads(default.get_config().to_json_best_effort())
  d["schedule"]["infonoise"].update(sigma_min=0.002, sigma_max=80.0)  # written before the merge
  d["fid"]["seed_sets"] = 1  # a key nothing read
  _write_config(tmp_path / "same", d)
  loaded = restore.load_config(str(tmp_path / "same"))
  assert "sigma_min" not in loaded.schedule.infonoise and "seed_sets" not in loaded.fid
  assert (loaded.edm.sigma_min, loaded.edm.sigma_max) == (0.002, 80.0)
  d["schedule"]["infonoise"].update(sigma_min=0.01, sigma_max=80.0)
  _write_config(tmp_path / "differs", d)
  with pytest.raises(ValueError, match=r"schedule\.infonoise\.sigma_min = 0\.01 differs"):
    restore.load_config(str(tmp_path / "differs"))


def test_a_config_json_from_before_the_flat_optimizer_loads_leafwise(tmp_path):
  d = json.loads(default.get_config().to_json_best_effort())
  del d["optim"]["flat_update"]
  _write_config(tmp_path, d)
  loaded = restore.load_config(str(tmp_path))
  assert loaded.optim.flat_update is False  # the layout such runs trained with
  opt_state = train_state.make_optimizer(loaded).init({"w": jnp.ones(3), "b": jnp.ones(2)})
  shapes = {leaf.shape for leaf in jax.tree.leaves(opt_state)}
  assert (3,) in shapes and (2,) in shapes and (5,) not in shapes  # moments leaf by leaf


def test_a_config_json_without_keys_added_since_takes_their_defaults(tmp_path):
  """sample / evaluate / diagnose / --config=config.json on a run from before a key existed
  failed with AttributeError / KeyError tracebacks (2026-12-07 probe of 2026-11-27 runs)."""
  d = json.loads(default.get_config().to_json_best_effort())
  d["train"]["num_steps"] = 123
  del d["train"]["trace_start"], d["schedule"]["infonoise"]["onset_refreshes"]
  _write_config(tmp_path, d)
  loaded = restore.load_config(str(tmp_path))
  want = default.get_config()
  assert loaded.train.trace_start == want.train.trace_start
  assert loaded.schedule.infonoise.onset_refreshes == want.schedule.infonoise.onset_refreshes
  assert loaded.train.num_steps == 123  # the saved values stay


def test_load_config_errors_name_the_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json not found"):
    restore.load_config(str(tmp_path))
  d = json.loads(default.get_config().to_json_best_effort())
  d["train"]["num_stepz"] = 3
  _write_config(tmp_path, d)
  # a run made by code with a key since removed: the file, not the user's command, has it
  with pytest.raises(ValueError, match=r"config\.json holds config key\(s\) \['train\.num_"):
    restore.load_config(str(tmp_path))


def _tiny_state(step: int):
  schedule = InfoNoise(num_bins=4)
  return train_state.TrainState(
    step=jnp.int32(step),
    params={"w": jnp.arange(3.0)},
    ema_params={"w": jnp.arange(3.0) * 2},
    opt_state=(jnp.zeros(3),),
    schedule_state=schedule.init_state(),
    rng=jax.random.key_data(jax.random.key(0)),
  )


def _abstract(state):
  return train_state.abstract_state(lambda: state, SingleDeviceSharding(jax.devices()[0]))


def test_save_restore_round_trip_with_meta_and_retention(tmp_path):
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=2)
  states = {s: _tiny_state(s) for s in (1, 2, 3)}
  for s, state in states.items():
    ckpt.save(s, state, meta={"step": s, "data_shape": [8, 8, 1]}, force=True)
  ckpt.save(3, states[1], meta={"step": 1}, force=True)  # an existing step is not rewritten
  ckpt.close()
  reader = checkpointing.Checkpointer(str(tmp_path), keep=2, create=False)
  assert reader.all_steps() == [2, 3] and reader.latest_step() == 3
  assert reader.restore_meta(2) == {"step": 2, "data_shape": [8, 8, 1]}
  restored, meta = reader.restore(_abstract(states[3]), step=2)
  assert meta["step"] == 2 and int(restored.step) == 2
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(states[2]), strict=True):
    np.testing.assert_array_equal(a, b)
  restored, meta = reader.restore(_abstract(states[3]), step=3)
  assert meta["step"] == 3 and int(restored.step) == 3
  reader.close()


def test_a_save_killed_before_it_finished_is_removed_by_the_next_trainer(tmp_path):
  """A process killed mid-save leaves Orbax's temporary folder (a full-size copy of the
  state) that no later save of another step removes: the trainer's Checkpointer does, a
  reader's does not (it could be a live save), and the finished steps stay readable."""
  import shutil

  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=3)
  ckpt.save(2, _tiny_state(2), meta={"step": 2}, force=True)
  ckpt.close()
  root = tmp_path / "checkpoints"
  shutil.copytree(root / "2", root / "4.orbax-checkpoint-tmp")  # what a SIGKILL leaves
  checkpointing.Checkpointer(str(tmp_path), keep=3, create=False).close()
  assert (root / "4.orbax-checkpoint-tmp").is_dir()
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=3)
  assert sorted(p.name for p in root.iterdir()) == ["2"]
  assert ckpt.all_steps() == [2] and ckpt.restore_meta(2) == {"step": 2}
  ckpt.close()


def test_a_schedule_state_saved_without_its_update_counter_is_migrated(tmp_path):
  # InfoNoise's state before `update` stopped taking the optimizer step had no num_updates.
  new = _tiny_state(7)
  old = new.replace(
    schedule_state={k: v for k, v in new.schedule_state.items() if k != "num_updates"}
  )
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=1)
  ckpt.save(7, old, force=True)
  restored, _ = ckpt.restore(_abstract(new))
  assert int(restored.schedule_state["num_updates"]) == 7  # one update per step
  assert jax.tree.structure(restored) == jax.tree.structure(new)
  # The counter is a buffer of its own: made from the step without a copy, it was the step's
  # buffer, and the train step (which donates the state) failed with "Attempt to donate the
  # same buffer twice" on resuming a 2026-11-27 run with its config.json (flat_update False,
  # so no layout conversion made new buffers).
  step = jax.jit(lambda s: jax.tree.map(lambda x: x + 0, s), donate_argnums=0)
  step(restored)
  ckpt.close()


def test_a_mismatched_checkpoint_is_a_clear_error_and_left_untouched(tmp_path):
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=1)
  ckpt.save(5, _tiny_state(5), force=True)
  other = _tiny_state(5).replace(params={"w": jnp.zeros(4)})
  with pytest.raises(ValueError, match="does not match the state this config builds"):
    ckpt.restore(_abstract(other))
  assert ckpt.all_steps() == [5]
  ckpt.close()


def _mixed_state(step: int):
  """_tiny_state with bfloat16 and int32 leaves beside the float32 ones and a scalar."""
  state = _tiny_state(step)
  return state.replace(
    params={"w": jnp.arange(3.0), "b": jnp.arange(4, dtype=jnp.bfloat16) / 3, "k": jnp.int32(5)}
  )


def test_one_process_saves_one_array_per_dtype_and_restores_every_leaf(tmp_path):
  """Orbax's work per save grows with the number of arrays: one process packs the state into
  one flat array per dtype (with each leaf's path, shape and dtype beside it) and restores
  every leaf bit for bit, in the template's sharding and dtype."""
  import orbax.checkpoint as ocp

  state = _mixed_state(4)
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=1)
  ckpt.save(4, state, force=True)
  ckpt.wait()
  packed = ocp.StandardCheckpointer().restore(tmp_path / "checkpoints" / "4" / "packed")
  dtypes = {np.dtype(x.dtype).name for x in jax.tree.leaves(state)}
  assert sorted(packed) == sorted(dtypes) and "bfloat16" in packed
  assert sum(v.size for v in packed.values()) == sum(x.size for x in jax.tree.leaves(state))
  abstract = _abstract(state)
  restored, _ = ckpt.restore(abstract)
  for a, b, t in zip(*(jax.tree.leaves(x) for x in (restored, state, abstract)), strict=True):
    assert a.dtype == b.dtype and a.sharding == t.sharding
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  ckpt.close()
  _assert_read_arrays(tmp_path, 4, state)


def _assert_read_arrays(workdir, step, state):
  """read_arrays gives every leaf by its path, as the state has it."""
  leaves = jax.tree_util.tree_flatten_with_path(state)[0]
  read = checkpointing.read_arrays(str(workdir), step)
  assert sorted(read) == sorted(checkpointing._path(p) for p, _ in leaves)
  for p, x in leaves:
    np.testing.assert_array_equal(read[checkpointing._path(p)], np.asarray(x))


def test_a_checkpoint_saved_array_by_array_is_still_read(tmp_path):
  """Before packing (and from several processes) the state was one Orbax item, "state"."""
  import orbax.checkpoint as ocp

  state = _mixed_state(3)
  manager = ocp.CheckpointManager(str(tmp_path / "checkpoints"))
  args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave({"a": 1}))
  manager.save(3, args=args)
  manager.wait_until_finished()
  manager.close()
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=1)
  restored, meta = ckpt.restore(_abstract(state))
  assert meta == {"a": 1}
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with pytest.raises(ValueError, match="does not match the state this config builds"):
    ckpt.restore(_abstract(state.replace(params={"w": jnp.zeros(4)})))
  ckpt.close()
  _assert_read_arrays(tmp_path, 3, state)


def test_a_packed_array_of_the_wrong_length_is_not_restored():
  """_unpack checks the layout against the template and the arrays against the layout."""
  state = _mixed_state(2)
  packed, layout = checkpointing._pack(state)
  abstract = _abstract(state)
  jax.tree.map(
    np.testing.assert_array_equal, checkpointing._unpack(packed, layout, abstract), state
  )
  short = {**packed, "float32": packed["float32"][:-1]}
  with pytest.raises(ValueError, match="shorter"):
    checkpointing._unpack(short, layout, abstract)
  long = {**packed, "int32": np.concatenate([packed["int32"], packed["int32"]])}
  with pytest.raises(ValueError, match="longer"):
    checkpointing._unpack(long, layout, abstract)
  with pytest.raises(ValueError, match="not the state's"):
    checkpointing._unpack(packed, layout, _abstract(state.replace(params={"w": jnp.zeros(3)})))
  # a leaf whose dtype changed is cast to the template's, as Orbax casts array by array
  wider = state.replace(params={**state.params, "b": state.params["b"].astype(jnp.float32)})
  restored = checkpointing._unpack(packed, layout, _abstract(wider))
  assert restored.params["b"].dtype == jnp.float32
  np.testing.assert_array_equal(restored.params["b"], state.params["b"].astype(jnp.float32))


def _optimizer_states(runs: int | None = None):
  """A TrainState after three Adam updates, in both optimizer layouts (`make_optimizer`, the
  flat one through optax.flatten), optionally stacked over `runs` runs as the harness's are.
  No clipping, so that both layouts do the same float operations (Adam is elementwise; the
  clip's global norm would sum in another order) and must agree bit for bit."""
  config = default.get_config()
  config.optim.grad_clip = 0.0
  params = {"conv": {"kernel": jnp.arange(6.0).reshape(3, 2)}, "bias": jnp.ones(4)}
  grads = [jax.tree.map(lambda p, k=k: jnp.sin(p + k), params) for k in range(3)]

  def trained(flat: bool, params):
    config.optim.flat_update = flat
    optimizer = train_state.make_optimizer(config)
    opt_state = optimizer.init(params)
    for g in grads:
      _, opt_state = optimizer.update(g, opt_state, params)
    return train_state.TrainState(
      step=jnp.int32(3), params=params, ema_params=params, opt_state=opt_state,
      schedule_state={}, rng=jax.random.key_data(jax.random.key(0)),
    )  # fmt: skip

  if runs is None:
    return trained(False, params), trained(True, params)
  stacked = jax.tree.map(lambda p: jnp.stack([p * (r + 1) for r in range(runs)]), params)
  return tuple(jax.vmap(lambda p, f=f: trained(f, p))(stacked) for f in (False, True))


@pytest.mark.parametrize("runs", [None, 2])
def test_optimizer_state_converts_between_layouts_as_optax_flatten_lays_it_out(runs):
  leafwise, flat = _optimizer_states(runs)
  assert train_state.optimizer_layout(leafwise) == "leafwise"
  assert train_state.optimizer_layout(flat) == "flat"
  batch = () if runs is None else (runs,)
  assert jax.tree.leaves(flat.opt_state)[1].shape == (*batch, 10)  # mu: 6 + 4 numbers per run
  for source, target, layout in ((leafwise, flat, "flat"), (flat, leafwise, "leafwise")):
    converted = train_state.convert_optimizer_layout(source, layout)
    assert jax.tree.structure(converted) == jax.tree.structure(target)
    for a, b in zip(jax.tree.leaves(converted), jax.tree.leaves(target), strict=True):
      np.testing.assert_array_equal(a, b)
    assert train_state.convert_optimizer_layout(source, train_state.optimizer_layout(source)) is (
      source
    )
    # On ShapeDtypeStructs (the restore target): the other layout's shapes, sharding kept.
    abstract = _abstract(source)
    shapes = train_state.convert_optimizer_layout(abstract, layout)
    assert jax.tree.structure(shapes) == jax.tree.structure(target)
    for a, b in zip(jax.tree.leaves(shapes), jax.tree.leaves(target), strict=True):
      assert (a.shape, a.dtype) == (b.shape, b.dtype)
      assert a.sharding == jax.tree.leaves(abstract)[0].sharding
  with pytest.raises(ValueError, match="optimizer layout 'fused'"):
    train_state.convert_optimizer_layout(leafwise, "fused")


@pytest.mark.parametrize("runs", [None, 3])
@pytest.mark.parametrize("saved_layout", ["leafwise", "flat"])
def test_a_checkpoint_restores_into_the_other_optimizer_layout(tmp_path, saved_layout, runs):
  """optim.flat_update may change on a resume, and runs from before it (leafwise) restore:
  the saved optimizer state is read in its own layout and converted; so are the harness's
  kept states of several runs stacked (runs=3)."""
  leafwise, flat = _optimizer_states(runs)
  saved, target = (leafwise, flat) if saved_layout == "leafwise" else (flat, leafwise)
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=1)
  ckpt.save(3, saved, meta={"step": 3}, force=True)
  restored, meta = ckpt.restore(_abstract(target))
  assert meta == {"step": 3}
  assert jax.tree.structure(restored) == jax.tree.structure(target)
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(target), strict=True):
    np.testing.assert_array_equal(a, b)
  ckpt.close()
