"""Smoke tests of the benchmark scripts on CPU: they build the real step and report numbers.

The scripts are not tests of speed (BENCHMARKS.md holds the numbers); these only keep them
runnable as the code they import changes.
"""

import json
import math
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "experiments", "benchmarks"))

import memory_floor  # noqa: E402
import parallel_runs_bench  # noqa: E402
import profile_step  # noqa: E402
import restart_bench  # noqa: E402
import scaling_bench  # noqa: E402
import thread_cpu  # noqa: E402
import trace_gaps  # noqa: E402
import train_step_bench  # noqa: E402
import trainer_bench  # noqa: E402


@pytest.fixture(scope="module")
def tiny_config():
  return train_step_bench.config_for(os.path.join(ROOT, "configs", "test.py"), "float32", 16)


def test_train_step_bench_reports_finite_throughput_and_flops(tiny_config):
  r = train_step_bench.bench(tiny_config, (8, 8, 1), iters=2)
  assert r["loss_finite"]
  assert r["images_per_s"] > 0 and np.isfinite(r["images_per_s"])
  assert r["synced_ms"] > 0 and r["step_ms"] > 0
  assert r["tflop_per_step"] > 0  # XLA's CPU cost analysis counted the step
  assert r["flops_source"] == "XLA cost analysis"
  # No peak is known for the CPU: MFU says so instead of printing nan.
  assert r["mfu"] is None
  assert r["mfu_text"] == "n/a (unknown peak for cpu; set system.peak_tflops)"


def test_train_step_bench_runs_a_token_config_with_the_encodings_sigma_data():
  """configs/dna.py leaves edm.sigma_data = 0 for the trainer to take from its data; the bench
  has no data, so it takes the one-hot std of shape[-1] symbols (here the std of the 4
  centred codewords e_k - 1/4, computed directly)."""
  config = train_step_bench.config_for(
    os.path.join(ROOT, "configs", "dna.py:cpu"), "float32", 8, ["model.depth=1", "data.scale=2.0"]
  )
  assert config.edm.sigma_data == 0
  r = train_step_bench.bench(config, (16, 4), iters=2)
  assert r["loss_finite"]
  assert config.edm.sigma_data == pytest.approx((2.0 * (np.eye(4) - 0.25)).std(), rel=1e-6)
  # an image config with sigma_data = 0 is refused, naming the key and the fix
  image = train_step_bench.config_for(os.path.join(ROOT, "configs", "test.py"), "float32", 8)
  image.edm.sigma_data = 0.0
  with pytest.raises(ValueError, match=r"edm\.sigma_data=0 .*--set edm\.sigma_data"):
    train_step_bench.resolve_token_sigma_data(image, (8, 8, 1))


def test_profile_kernel_kinds():
  kind = profile_step.kind_of
  assert kind("sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc") == kind(
    "nvjet_sm90_tst_256x128"
  )
  assert kind("sm90_xmma_fprop_implicit_gemm").startswith("conv/matmul")
  assert kind("input_add_reduce_fusion_57") == "reduction fusion"
  assert kind("loop_compare_select_fusion") == "elementwise / other fusion"
  assert kind("input_transpose_fusion_8") == "copy / transpose"
  assert kind("Memset 3") == "copy / transpose"
  assert kind("something_else") == "other"
  assert kind("loop_convert_fusion_14") == "elementwise / other fusion"  # not a convolution
  assert kind("input_convert_reduce_fusion_24") == "reduction fusion"


def test_trainer_bench_reads_the_trainers_window_throughput(tmp_path):
  from infonoise_jax import train

  config = trainer_bench.load_config(os.path.join(ROOT, "configs", "test.py"), 8)
  r = trainer_bench.trainer(config, str(tmp_path / "run"))
  assert r["num_windows"] == 4  # log_every 2
  assert r["steps"] == pytest.approx(7)  # steps 2..8: the first (compiling) step is left out
  assert r["steps_per_s"] > 0 and r["seconds"] > 0 and r["wall_s"] > r["seconds"]
  assert [w[0] for w in r["windows"]] == [2, 4, 6, 8]  # (end step, steps/s, seconds, ...)
  assert all(w[1] > 0 and w[2] > 0 and min(w[3:]) >= 0 for w in r["windows"])
  # the window's seconds are its steps at its rate
  assert [w[2] for w in r["windows"]][1:] == pytest.approx([2 / w[1] for w in r["windows"]][1:])
  # the loop's waits are host time, a window's seconds device time (finish to finish): a host
  # running ahead can wait in one window for steps the device finished in the one before, so
  # only the run's total bounds them
  assert sum(sum(w[4:]) for w in r["windows"]) <= r["wall_s"]
  run = train.Run(config, str(tmp_path / "unused"))
  bare = trainer_bench.bare_step(run, iters=2, repeats=2)
  assert bare["step_s"] > 0 and len(bare["rounds_s"]) == 2 and bare["flops"].flops > 0
  assert bare["mean_step_s"] == pytest.approx(sum(bare["rounds_s"]) / 2)


def test_trainer_bench_reports_a_run_stopped_by_a_time_limit(tmp_path, monkeypatch, capsys):
  """A SIGTERM in the trainer's loop (a call's time limit) ends the benchmark with what it
  measured: the windows before the stop, the bare step timed before the trainer only."""
  import signal

  from infonoise_jax import train

  real_add = train._InFlight.add

  def add(self, i, x):
    if i == 5:
      os.kill(os.getpid(), signal.SIGTERM)
    return real_add(self, i, x)

  monkeypatch.setattr(train._InFlight, "add", add)
  config = os.path.join(ROOT, "configs", "test.py")
  argv = [f"--config={config}", "--steps=12", "--iters=2", "--repeats=2", "--windows"]
  monkeypatch.setattr(sys, "argv", ["trainer_bench.py", *argv, f"--workdir={tmp_path / 'w'}"])
  trainer_bench.main()
  out = capsys.readouterr().out
  assert out.index("Bare step before the trainer:") < out.index("stopped at step")
  stopped = int(re.search(r"stopped at step (\d+) of 12", out).group(1))
  assert 5 <= stopped < 12
  windows = [int(m) for m in re.findall(r"^\| (\d+) \| ", out, re.M)]
  assert windows and windows == sorted(windows) and windows[-1] <= stopped
  assert "Bare step over all 2 rounds of 2" in out  # the rounds before the trainer only
  assert re.search(r"; before the trainer: [\d,]+\)", out) and "after the trainer" not in out


def test_trainer_bench_reports_a_run_stopped_while_drawing_its_final_samples(
  tmp_path, monkeypatch, capsys
):
  """A SIGTERM after the steps, while the final samples are drawn (an H100 call lost a whole
  trainer table to it): the benchmark still reports every window, as a stop at the last step."""
  import signal

  from infonoise_jax import diagnostics

  def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    raise RuntimeError("INTERNAL: ptxas exited with non-zero error code 15")

  monkeypatch.setattr(diagnostics, "write_final", killed)
  config = os.path.join(ROOT, "configs", "test.py")
  argv = [f"--config={config}", "--steps=8", "--iters=2", "--repeats=2", "--windows"]
  monkeypatch.setattr(sys, "argv", ["trainer_bench.py", *argv, f"--workdir={tmp_path / 'w'}"])
  trainer_bench.main()
  out = capsys.readouterr().out
  assert "stopped at step 8 of 8 by a stop signal" in out
  windows = [int(m) for m in re.findall(r"^\| (\d+) \| ", out, re.M)]
  assert windows and windows[-1] == 8


def test_trainer_bench_times_every_step_call_variant_in_interleaved_rounds(tmp_path):
  from infonoise_jax import metrics, train

  config = trainer_bench.load_config(os.path.join(ROOT, "configs", "test.py"), 8)
  run = train.Run(config, str(tmp_path / "run"))
  calls, limits, accumulated = [], [], []
  real_add, real_init = train._InFlight.add, train._InFlight.__init__
  real_acc = metrics.accumulate
  with pytest.MonkeyPatch.context() as m:
    m.setattr(train._InFlight, "add", lambda s, i, x: calls.append(i) or real_add(s, i, x))
    m.setattr(train._InFlight, "__init__", lambda s, n: limits.append(n) or real_init(s, n))
    m.setattr(metrics, "accumulate", lambda w, x: accumulated.append(1) or real_acc(w, x))
    out = trainer_bench.loop_variants(run, iters=3, repeats=2)
  assert [r["name"] for r in out] == [v[0] for v in trainer_bench.VARIANTS]
  assert all(len(r["rounds_s"]) == 2 and min(r["rounds_s"]) > 0 for r in out)
  assert all(r["step_s"] == pytest.approx(float(np.median(r["rounds_s"]))) for r in out)
  waiting = [v for v in trainer_bench.VARIANTS if v[3] is not None]
  assert calls == [0, 1, 2] * len(waiting) * 2  # each variant with the loop's wait, each round
  own = config.train.max_steps_in_flight
  assert limits == [own if v[3] == "config" else v[3] for v in waiting] * 2
  assert len(accumulated) == 3 * sum(v[4] for v in trainer_bench.VARIANTS) * 2


def test_trainer_bench_fails_before_any_step_without_a_writer(monkeypatch):
  """No tensorboardX and no clu writer: main stops at once, before the bare step compiles."""
  from infonoise_jax import writers

  monkeypatch.setattr(writers, "_import_clu_writers", lambda: None)
  real_find_spec = trainer_bench.importlib.util.find_spec
  monkeypatch.setattr(
    writers.importlib.util,
    "find_spec",
    lambda name, *a: None if name == "tensorboardX" else real_find_spec(name, *a),
  )
  compiled = []
  monkeypatch.setattr(trainer_bench, "bare_step", lambda *a, **k: compiled.append(1))
  monkeypatch.setattr(sys, "argv", ["trainer_bench.py", "--config", "configs/test.py"])
  with pytest.raises(ImportError, match="pip install tensorboardX"):
    trainer_bench.main()
  assert not compiled


def test_parallel_runs_bench_times_vmapped_runs_with_finite_losses():
  config = parallel_runs_bench.make_config(os.path.join(ROOT, "configs", "test.py"), [])
  r = parallel_runs_bench.time_runs(config, runs=2, iters=2)
  assert r["finite"] and r["run_steps"] == 4 and r["end"] > r["start"]


def test_scaling_bench_points():
  assert scaling_bench.scaled_attention((7,), 28, 64) == (16,)
  assert scaling_bench.scaled_attention((16,), 32, 28) == (14,)
  with pytest.raises(ValueError, match="no level"):
    scaling_bench.scaled_attention((7,), 28, 30)
  point = dict(
    config=os.path.join(ROOT, "configs", "test.py"),
    dtype="float32",
    set=[],
    iters=1,
    native=8,
    batch=8,
    shape=[8, 8, 1],
  )
  r = scaling_bench.step_point(point)
  assert r["step_ms"] > 0 and r["xla_plan_gib"] > 0
  assert r["mfu_text"].startswith("n/a")  # no peak for the CPU
  est = scaling_bench.estimator_point(16, 64, iters=5)
  assert est["call"] > 0 and est["fused"] > 0


def test_restart_bench_times_a_restart_from_the_cache(tmp_path):
  """A second process with the same config and cache folder compiles nothing new."""
  cache = str(tmp_path / "xla")
  os.makedirs(cache)
  config = os.path.join(ROOT, "configs", "test.py")
  overrides = ["train.sample_every=0", "system.compilation_cache_min_secs=0"]
  cold = restart_bench.launch(config, str(tmp_path / "a"), 3, cache, overrides, 300)
  filled = restart_bench.cache_files(cache)
  warm = restart_bench.launch(config, str(tmp_path / "b"), 3, cache, overrides, 300)
  assert filled > 0 and restart_bench.cache_files(cache) == filled
  for r in (cold, warm):
    assert 0 <= r["first_step"] < r["to_first_step"] <= r["total"]


def test_sample_bench_prints_rate_and_bound():
  cmd = [sys.executable, os.path.join(ROOT, "experiments", "benchmarks", "sample_bench.py")]
  args = ["--small", "--batch_sizes", "8", "--iters", "1", "--bound_tflops", "0.001"]
  r = subprocess.run(cmd + args, capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]
  rows = [line for line in r.stdout.splitlines() if line.startswith(("| keyed", "| batched"))]
  assert len(rows) == 2
  for row in rows:  # images/s > 0 and a finite bound / measured ratio
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[4]) > 0 and float(cells[6]) > 0


def test_trainer_reports_where_its_loop_waited(tmp_path, monkeypatch):
  """perf/data_wait_seconds sees a data pipeline that falls behind: with every batch made
  0.3 s late (longer than a step here) the loop's waits for data add up to most of that
  delay; with the pipeline as it is they stay far below it."""
  import time

  from infonoise_jax.data import pipeline

  config = train_step_bench.config_for(os.path.join(ROOT, "configs", "test.py"), "float32", 16)
  config.train.num_steps, config.train.log_every = 16, 4
  fast = trainer_bench.trainer(config, str(tmp_path / "fast"))
  iterate = pipeline.Pipeline.iterate

  def slow_iterate(self, *args, **kwargs):
    inner = iterate(self, *args, **kwargs)
    try:
      for batch in inner:
        time.sleep(0.3)
        yield batch
    finally:  # the trainer closes this generator: stop the pipeline's thread too
      inner.close()

  monkeypatch.setattr(pipeline.Pipeline, "iterate", slow_iterate)
  slow = trainer_bench.trainer(config, str(tmp_path / "slow"))
  waited = lambda r: sum(w[4] for w in r["windows"])
  # 15 steps after the first; batches made during the compile (the two buffers, up to 6)
  # are not waited for; the rest wait 0.3 s less the step's own time (~0.1 s on 8 CPU
  # devices) each: about 9 x 0.2 s.
  assert waited(slow) > 1.0
  assert waited(fast) < 0.3
  assert all(w[5] >= 0 for w in slow["windows"] + fast["windows"])


def test_trainer_reports_time_inside_the_step_call(tmp_path, monkeypatch):
  """perf/dispatch_seconds is the time the loop spends inside the compiled step's call
  (where a GPU's full launch queue blocks it): a call made 0.2 s slower adds about 0.2 s per
  step there, and nothing to the data or device waits."""
  import time

  from infonoise_jax import train

  config = train_step_bench.config_for(os.path.join(ROOT, "configs", "test.py"), "float32", 16)
  config.train.num_steps, config.train.log_every = 12, 4
  step = train.CompileAhead.step

  def slow_step(self):
    ahead = step(self)

    def call(*args):
      time.sleep(0.2)
      return ahead.program(*args)

    return ahead._replace(program=call)

  monkeypatch.setattr(train.CompileAhead, "step", slow_step)
  slow = trainer_bench.trainer(config, str(tmp_path / "slow"))
  windows = slow["windows"][1:]  # whole windows: 4 steps each, all after the first step
  assert all(0.8 <= w[6] <= w[2] + 1e-3 for w in windows)
  assert all(w[4] < 0.3 for w in windows)
  # the first window (steps 2-4: the compiling first step is in no window) holds only its
  # own three calls, not the compile's wait
  first = slow["windows"][0]
  assert 0.6 <= first[6] <= first[2] + 1e-3


def test_trace_gaps_counts_busy_time_once_across_streams_and_sorts_gaps(tmp_path, capsys):
  """Made-up kernels (profile_step.device_events' tuples, ns): on one device [0,10) and [5,20)
  us overlap, then [30,40) and [1040,1050): busy 40 us of a 1050 us span, one 10 us gap and
  one 1000 us gap; a second device is summed apart."""
  us = 1000

  def k(name, start, dur, device="/device:GPU:0"):
    return (device, name, "op", start * us, dur * us)

  events = [k("conv", 0, 10), k("conv", 5, 15), k("copy", 30, 10), k("conv", 1040, 10)]
  s, other = trace_gaps.summarize([*events, k("x", 0, 3, "/device:GPU:1")], steps=2)
  assert s["device"] == "/device:GPU:0" and s["kernels"] == 4
  assert other["device"] == "/device:GPU:1" and other["busy_ms"] == pytest.approx(0.003)
  assert s["span_ms"] == pytest.approx(1.05) and s["busy_ms"] == pytest.approx(0.04)
  assert [(g["count"], g["ms"]) for g in s["gaps"]] == [(0, 0), (1, 0.01), (0, 0), (1, 1.0)]
  assert s["top_kernels_ms"][0] == ("conv", pytest.approx(0.035))
  assert s["ms_per_step"] == pytest.approx(0.525)
  assert "busy 0.0 ms (3.8%)" in trace_gaps.render("t", [s])
  with pytest.raises(SystemExit, match=r"no \*.xplane.pb under it"):
    trace_gaps.main([str(tmp_path)])


def test_thread_cpu_parses_thread_names_with_spaces_and_parentheses():
  # proc(5): pid (comm) state ppid ... utime is field 14, stime field 15.
  fields = ["S"] + [str(i) for i in range(4, 14)] + ["1700", "23"] + ["0"] * 30
  line = "4242 (py (data) thread) " + " ".join(fields)
  assert thread_cpu.parse_task_stat(line) == ("py (data) thread", 1700, 23)


def test_thread_cpu_summary_is_the_tick_deltas_in_percent():
  # 100 ticks/s; one second between samples: the main thread spent 90 user + 5 system ticks,
  # two other threads 30 + 20 (one of them new), the host 16 cores' 1600 ticks of which
  # 48 stolen and 800 idle.
  def cpu(user, idle, steal):
    return [user, 0, 0, idle, 0, 0, 0, steal]

  samples = [
    {"t": 10.0, "pid": 7, "cpu": cpu(0, 0, 0), "threads": {"7": ["m", 100, 10], "8": ["a", 5, 0]}},
    {
      "t": 11.0,
      "pid": 7,
      "cpu": cpu(752, 800, 48),
      "threads": {"7": ["m", 190, 15], "8": ["a", 35, 0], "9": ["b", 15, 5]},
    },
  ]
  (row,) = thread_cpu.summarize(samples, every=0.5, ticks_per_s=100)
  assert row["t"] == 1.0 and row["threads"] == 3
  np.testing.assert_allclose(
    [row["main_user"], row["main_sys"], row["others"], row["steal"], row["idle"]],
    [90.0, 5.0, 50.0, 3.0, 50.0],
  )
  # Rows are at least `every` apart: the second sample is skipped when every = 2 s.
  assert thread_cpu.summarize(samples, every=2.0, ticks_per_s=100) == []


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="reads /proc (Linux)")
def test_thread_cpu_run_records_a_busy_main_thread_and_keeps_the_exit_status(tmp_path):
  out = tmp_path / "cpu.jsonl"
  busy = (
    "import time\nt = time.process_time()\n"
    "while time.process_time() - t < 0.6: pass\nraise SystemExit(3)"
  )
  script = os.path.join(ROOT, "experiments", "benchmarks", "thread_cpu.py")
  cmd = [sys.executable, script, "run", f"--out={out}", "--interval=0.05", "--", sys.executable]
  proc = subprocess.run([*cmd, "-c", busy], capture_output=True, text=True, timeout=60)
  assert proc.returncode == 3, proc.stderr
  rows = [json.loads(line) for line in out.read_text().splitlines()]
  assert len(rows) >= 2
  main = str(rows[0]["pid"])
  first, last = rows[0]["threads"][main], rows[-1]["threads"][main]
  # The child burned 0.6 s of CPU on its main thread; the samples bracket most of it.
  assert (last[1] + last[2] - first[1] - first[2]) / os.sysconf("SC_CLK_TCK") > 0.3
  table = subprocess.run(
    [sys.executable, script, "summarize", str(out), "--every=0.1"], capture_output=True, text=True
  )
  assert table.returncode == 0 and table.stdout.startswith("| s | main thread user %")


def test_checkpoint_bench_times_both_layouts_and_a_restore(monkeypatch, capsys):
  """Two saves of the tiny config's state in each layout, then a restore: one line each."""
  sys.path.insert(0, os.path.join(ROOT, "experiments", "benchmarks"))
  import checkpoint_bench

  argv = ["checkpoint_bench.py", "--config", os.path.join(ROOT, "configs", "test.py"), "--saves=2"]
  monkeypatch.setattr(sys, "argv", argv)
  checkpoint_bench.main()
  out = capsys.readouterr().out
  assert out.count("packed save") == 2 and out.count("array by array save") == 2
  assert "restore packed:" in out


def test_hlo_kernels_counts_device_work_of_the_entry_computation():
  """Fusions, library calls and copies of ENTRY count; parameters, tuples, constants,
  bitcasts and the called computations' own instructions do not."""
  hlo = """HloModule m

%fused (p: f32[4]) -> f32[4] {
  %p = f32[4]{0} parameter(0)
  ROOT %s = f32[4]{0} sine(f32[4]{0} %p)
}

ENTRY %main (a: f32[4], b: f32[4,4]) -> (f32[4], f32[4]) {
  %a = f32[4]{0} parameter(0)
  %b = f32[4,4]{1,0} parameter(1)
  %c = f32[] constant(1)
  %f = f32[4]{0} fusion(f32[4]{0} %a), kind=kLoop, calls=%fused, metadata={op_name="x=y"}
  %g = (f32[4]{0}, s8[16]{0}) custom-call(f32[4,4]{1,0} %b, f32[4]{0} %f), custom_call_target="x"
  %h = f32[4]{0} get-tuple-element((f32[4]{0}, s8[16]{0}) %g), index=0
  %k = f32[4]{0} copy(f32[4]{0} %h)
  %v = f32[2,2]{1,0} bitcast(f32[4]{0} %k)
  ROOT %t = (f32[4]{0}, f32[4]{0}) tuple(f32[4]{0} %f, f32[4]{0} %k)
}
"""
  assert train_step_bench.hlo_kernels(hlo) == 3  # fusion, custom-call, copy


def test_flat_optimizer_takes_the_same_steps_with_fewer_kernels(tiny_config):
  """The flat layout (optim.flat_update: optax.flatten over the trainer's clip + Adam) trains
  to the same parameters as the leafwise optimizer, and its step compiles to less device
  work."""
  out = {}
  for layout in train_step_bench.OPTIMIZERS:
    step, state, x = train_step_bench.build(tiny_config, (8, 8, 1), layout)
    kernels = train_step_bench.hlo_kernels(step.lower(state, x).compile().as_text())
    for _ in range(3):
      state, m = step(state, x)
    out[layout] = (jax.device_get(state.params), float(m["loss"]), kernels)
  (p_leaf, loss_leaf, k_leaf), (p_flat, loss_flat, k_flat) = out["leafwise"], out["flat"]
  np.testing.assert_allclose(loss_flat, loss_leaf, rtol=1e-5)
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  jax.tree.map(close, p_flat, p_leaf)
  assert k_flat < k_leaf
  with pytest.raises(ValueError, match="optimizer layout 'fused'"):
    train_step_bench.build(tiny_config, (8, 8, 1), "fused")


def test_trainer_bench_keeps_the_trainers_result_when_stopped_while_timing_after_it(
  tmp_path, monkeypatch, capsys
):
  """A SIGTERM in the bare rounds after the trainer (where a call's time limit cut an H100 run
  on 2026-12-05) still prints the trainer's table, against the rounds before it."""
  import signal

  real_bare_step = trainer_bench.bare_step
  calls = []

  def bare_step(run, iters, repeats):
    calls.append(1)
    if len(calls) == 2:  # the rounds after the trainer
      os.kill(os.getpid(), signal.SIGTERM)
    return real_bare_step(run, iters, repeats)

  monkeypatch.setattr(trainer_bench, "bare_step", bare_step)
  config = os.path.join(ROOT, "configs", "test.py")
  argv = [f"--config={config}", "--steps=6", "--iters=2", "--repeats=2"]
  monkeypatch.setattr(sys, "argv", ["trainer_bench.py", *argv, f"--workdir={tmp_path / 'w'}"])
  handler = signal.getsignal(signal.SIGTERM)
  trainer_bench.main()
  out = capsys.readouterr().out
  assert out.index("Finished 6 steps") < out.index("in the closing bare-step rounds")
  assert re.search(r"\| trainer, 5 steps in \d+ log windows .* \| [\d,]+ \| [\d.]+% \|", out)
  assert "Bare step over all 2 rounds of 2" in out  # the rounds before the trainer only
  assert re.search(r"; before the trainer: [\d,]+\)", out) and "after the trainer" not in out
  assert signal.getsignal(signal.SIGTERM) == handler  # the handler was put back


def test_memory_floor_counts_what_the_model_computes():
  """The floor's element counts against flax's own record of the same forward (GroupNorm and
  block outputs captured as intermediates), and its convolution MACs against XLA's FLOP count
  of the lowered forward: XLA skips the taps that fall on padding, so at 16x16 and 8x8 with
  3x3 kernels it counts 85-95% of the dense MACs cuDNN computes."""
  from infonoise_jax import models
  from infonoise_jax.models import unet_layers

  config = train_step_bench.config_for(
    os.path.join(ROOT, "configs", "cifar10_edm.py"), "float32", 4
  )
  config.model.update(model_channels=16, num_blocks=1, channel_mult=(1, 2), attn_resolutions=(8,))
  model = models.make_model(config, (16, 16, 3))
  seen = memory_floor.count(model, 4, (16, 16, 3))

  x, c = jnp.zeros((4, 16, 16, 3)), jnp.zeros((4,))
  v = model.init({"params": jax.random.key(0)}, x, c, train=False)

  def captured(kind):
    _, out = model.apply(
      v,
      x,
      c,
      train=True,
      rngs={"dropout": jax.random.key(1)},
      mutable=["intermediates"],
      capture_intermediates=lambda mdl, method: isinstance(mdl, kind) and method == "__call__",
    )
    return jax.tree.leaves(out["intermediates"])

  norms, blocks = captured(unet_layers.GroupNorm), captured(unet_layers.UNetBlock)
  assert seen["norm"] == sum(math.prod(a.shape) for a in norms) > 0
  # a block with attention sums twice; its scores are B x (HW)^2, HW = 8 x 8 here
  attended = seen["scores"] // (8 * 8) ** 2 // 4
  assert attended >= 1
  assert seen["residual"] == sum(math.prod(a.shape) for a in blocks) + attended * 4 * 8 * 8 * 32
  assert seen["params"] == models.param_count(model, (16, 16, 3))
  xla = jax.jit(lambda v, x, c: model.apply(v, x, c)).lower(v, x, c).cost_analysis()["flops"]
  assert 0.85 * 2 * seen["conv_macs"] <= xla <= 2 * seen["conv_macs"]


def test_memory_floor_prints_its_table_and_defines_no_global_flags(capsys):
  """The command line prints the floor's rows; it parses its own arguments (absl flags defined
  at import clashed with infonoise_jax.main's --config in the same test process)."""
  memory_floor.main(["--config=configs/cifar10_infonoise.py", "--batch_size=2"])
  out = capsys.readouterr().out
  assert "55,732,739 parameters" in out and "| **floor, all of it** |" in out
  from infonoise_jax import main  # noqa: F401  (defines --config: must not clash)


def test_profile_hlo_traffic_counts_operands_and_results_of_each_instruction():
  """Bytes per instruction from an optimized module: a fusion reading two bf16[8, 4] and
  writing a bf16[16, 4] moves 64 + 64 + 128 bytes; a reduction to bf16[4] 64 + 64 + 8."""
  f = jax.jit(lambda x, y: (jnp.sum(jnp.sin(x) * y, axis=0), jnp.concatenate([x, y], 0)))
  x = jnp.ones((8, 4), jnp.bfloat16)
  traffic = profile_step.hlo_traffic(f.lower(x, x).compile().as_text())
  entry = [v for k, v in traffic.items() if "fusion" in k]
  assert sorted(entry) == [64 + 64 + 8, 64 + 64 + 128]
  assert profile_step.shape_bytes("(f32[2,3]{1,0}, bf16[5]{0}, u32[])") == 24 + 10 + 4


def test_profile_matmul_flops_of_cudnn_convolutions_and_cublas_matmuls():
  """A 3x3 convolution 256 -> 128 channels on 512 x 32 x 32 is 2 * 512 * 32 * 32 * 9 * 256 *
  128 FLOPs forward, and the same for each gradient (XLA's backward calls hold the forward
  roles as (dy, w) -> dx and (x, dy) -> dw); a 64 x 100 by 100 x 7 matmul 2 * 64 * 7 * 100."""
  hlo = """
  %x = bf16[512,32,32,256]{3,2,1,0} parameter(0)
  %w = bf16[3,3,256,128]{3,2,1,0} parameter(1)
  %y = (bf16[512,32,32,128]{3,2,1,0}, u8[0]{0}) custom-call(%x, %w), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->b01f, custom_call_target="__cudnn$convForward"
  %dy = bf16[512,32,32,128]{3,2,1,0} parameter(2)
  %dw = (bf16[3,3,256,128]{3,2,1,0}, u8[0]{0}) custom-call(%x, %dy), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->b01f, custom_call_target="__cudnn$convBackwardFilter"
  %dx = (bf16[512,32,32,256]{3,2,1,0}, u8[0]{0}) custom-call(%dy, %w), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->b01f, custom_call_target="__cudnn$convBackwardInput"
  %a = bf16[64,100]{1,0} parameter(3)
  %b = bf16[100,7]{1,0} parameter(4)
  %g = (bf16[64,7]{1,0}, s8[0]{0}) custom-call(%a, %b), custom_call_target="__cublas$lt$matmul", backend_config={"gemm_backend_config":{"dot_dimension_numbers":{"lhs_contracting_dimensions":["1"],"rhs_contracting_dimensions":["0"]}}}
  """  # noqa: E501
  conv = 2 * 512 * 32 * 32 * 9 * 256 * 128
  assert profile_step.matmul_flops(hlo) == {
    "y": conv,
    "dw": conv,
    "dx": conv,
    "g": 2 * 64 * 7 * 100,
  }
  traffic = profile_step.hlo_traffic(hlo)
  assert traffic["y"] == 2 * (512 * 32 * 32 * (256 + 128) + 9 * 256 * 128)
