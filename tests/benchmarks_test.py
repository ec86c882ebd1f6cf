"""Smoke tests of the benchmark scripts on CPU: they build the real step and report numbers.

The scripts are not tests of speed (BENCHMARKS.md holds the numbers); these only keep them
runnable as the code they import changes.
"""

import os
import sys

import numpy as np
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "experiments", "benchmarks"))

import profile_step  # noqa: E402
import train_step_bench  # noqa: E402


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
