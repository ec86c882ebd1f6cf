"""Model FLOPs utilization (MFU): FLOPs per step, the device's peak rate, and their ratio.

MFU = (FLOPs of one step) x (steps per second) / (peak FLOP/s of all devices).

* FLOPs of a step come from XLA's cost analysis of the compiled program where it gives a
  count, else from the program's jaxpr (`jaxpr_flops`: 2 x multiply-adds of every matrix
  product and convolution, forward and backward; elementwise work is not counted). The jaxpr
  count is also a floor: XLA on GPU turns convolutions and matmuls into cuDNN / cuBLAS calls
  that its cost analysis may leave out, so a smaller XLA count is rejected (`step_flops`).
* The peak is the device's dense (no sparsity) rate for the run's compute dtype, from the
  table below by `device_kind`, or `system.peak_tflops` when set. An unknown device gives no
  MFU and says so (`describe_mfu`), never a NaN.
"""

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.extend import core as jax_core


class Peak(NamedTuple):
  bf16: float  # dense bfloat16 TFLOP/s per JAX device
  f32: float  # dense TFLOP/s of float32 matmuls at JAX's default precision, per JAX device
  source: str


# Dense peaks per JAX device (the vendors publish "with sparsity" figures twice as high).
# float32 at JAX's default matmul precision runs on TF32 tensor cores on these GPUs and as
# one bfloat16 pass on TPUs, so f32 is the TF32 rate on GPUs and the bf16 rate on TPUs.
# Checked in order; the first entry whose every word is in the lowercased device kind wins.
PEAKS: tuple[tuple[tuple[str, ...], Peak], ...] = (
  # NVIDIA H200 datasheet (nvidia.com/en-us/data-center/h200): SXM BF16 1,979 / TF32 989
  # TFLOPS with sparsity; NVL (PCIe) 1,671 / 835.
  (("h200", "nvl"), Peak(835.5, 417.5, "NVIDIA H200 NVL datasheet")),
  (("h200",), Peak(989.4, 494.7, "NVIDIA H200 SXM datasheet")),
  # NVIDIA H100 datasheet (nvidia.com/en-us/data-center/h100): SXM BF16 1,979 / TF32 989,
  # PCIe 1,513 / 756, NVL 1,671 / 835 TFLOPS with sparsity.
  (("h100", "nvl"), Peak(835.5, 417.5, "NVIDIA H100 NVL datasheet")),
  (("h100", "pcie"), Peak(756.5, 378.0, "NVIDIA H100 PCIe datasheet")),
  (("h100",), Peak(989.4, 494.7, "NVIDIA H100 SXM datasheet")),
  # NVIDIA A100 datasheet (nvidia.com/en-us/data-center/a100): BF16 312, TF32 156 TFLOPS
  # dense, SXM and PCIe alike.
  (("a100",), Peak(312.0, 156.0, "NVIDIA A100 datasheet")),
  # Google Cloud TPU system architecture pages (cloud.google.com/tpu/docs): peak bf16 per
  # chip; one JAX device per chip from v4 on (megacore). jax reports v5e as "TPU v5 lite",
  # v5p as "TPU v5p" or "TPU v5", v6e (Trillium) as "TPU v6 lite".
  (("tpu", "v6", "lite"), Peak(918.0, 918.0, "Cloud TPU v6e docs")),
  (("tpu", "v6e"), Peak(918.0, 918.0, "Cloud TPU v6e docs")),
  (("tpu", "v5", "lite"), Peak(197.0, 197.0, "Cloud TPU v5e docs")),
  (("tpu", "v5e"), Peak(197.0, 197.0, "Cloud TPU v5e docs")),
  (("tpu", "v5"), Peak(459.0, 459.0, "Cloud TPU v5p docs")),
  (("tpu", "v4"), Peak(275.0, 275.0, "Cloud TPU v4 docs")),
)


def lookup_peak(device_kind: str) -> Peak | None:
  """The table's entry for `device_kind` (e.g. 'NVIDIA H200'), or None if it is not there."""
  kind = device_kind.lower()
  for words, peak in PEAKS:
    if all(w in kind for w in words):
      return peak
  return None


def peak_tflops(device_kind: str, dtype: str, override: float = 0.0) -> float | None:
  """Peak TFLOP/s of one device for compute dtype `dtype`: `override` if > 0 (the config's
  `system.peak_tflops`), else the table's; None when the device is not in the table."""
  if override > 0:
    return float(override)
  peak = lookup_peak(device_kind)
  if peak is None:
    return None
  return peak.bf16 if dtype == "bfloat16" else peak.f32


# ------------------------------------------------------------------------------ FLOP counts


def _dot_flops(eqn) -> float:
  (lhs_contract, _), _ = eqn.params["dimension_numbers"]
  lhs_shape = eqn.invars[0].aval.shape
  out_size = np.prod(eqn.outvars[0].aval.shape, dtype=np.float64)
  return 2.0 * out_size * np.prod([lhs_shape[d] for d in lhs_contract], dtype=np.float64)


def _valid_taps(in_size, kernel, stride, pad_lo, lhs_dil, rhs_dil, out_size) -> int:
  """(output position, kernel tap) pairs of one spatial dimension that read a real input
  element, not padding or a hole of lhs dilation (as XLA's cost analysis counts them)."""
  dilated = (in_size - 1) * lhs_dil + 1
  pos = np.arange(out_size)[:, None] * stride + np.arange(kernel)[None, :] * rhs_dil - pad_lo
  return int(np.sum((pos >= 0) & (pos < dilated) & (pos % lhs_dil == 0)))


def _conv_flops(eqn) -> float:
  """2 x multiply-adds of a convolution (forward, or a backward pass's input- or
  weight-gradient convolution): per output feature and example, the valid (output position,
  tap) pairs of every spatial dimension times the input features per group."""
  p = eqn.params
  lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
  lhs, rhs = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
  out = eqn.outvars[0].aval.shape
  n = len(lhs_spec) - 2
  lhs_dil = p["lhs_dilation"] or (1,) * n
  rhs_dil = p["rhs_dilation"] or (1,) * n
  pairs = 1.0
  for i in range(n):
    pairs *= _valid_taps(
      lhs[lhs_spec[2 + i]],
      rhs[rhs_spec[2 + i]],
      p["window_strides"][i],
      p["padding"][i][0],
      lhs_dil[i],
      rhs_dil[i],
      out[out_spec[2 + i]],
    )
  return 2.0 * out[out_spec[0]] * out[out_spec[1]] * rhs[rhs_spec[1]] * pairs


def _sub_jaxprs(value) -> list:
  if isinstance(value, jax_core.ClosedJaxpr):
    return [value.jaxpr]
  if isinstance(value, jax_core.Jaxpr):
    return [value]
  if isinstance(value, tuple | list):
    return [j for v in value for j in _sub_jaxprs(v)]
  return []


def jaxpr_flops(jaxpr) -> float:
  """FLOPs of the matrix products and convolutions in `jaxpr` (a Jaxpr or ClosedJaxpr).

  Nested programs are counted where they run: a scan's body `length` times, the costliest
  branch of a cond, a while loop's body once (its trip count is not known before it runs).
  """
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      total += _dot_flops(eqn)
    elif name == "conv_general_dilated":
      total += _conv_flops(eqn)
    elif name == "cond":
      total += max((jaxpr_flops(b) for b in eqn.params["branches"]), default=0.0)
    elif name == "scan":
      total += eqn.params["length"] * jaxpr_flops(eqn.params["jaxpr"])
    else:
      total += sum(jaxpr_flops(j) for v in eqn.params.values() for j in _sub_jaxprs(v))
  return float(total)


def xla_flops(compiled) -> float | None:
  """The 'flops' of XLA's cost analysis of a `jax.stages.Compiled`, or None where there is
  none: the call raises or returns None, a list (older jax: one dict per program) or a dict
  without a positive 'flops'."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # noqa: BLE001 - "unavailable" comes as several exception types
    return None
  if isinstance(cost, list | tuple):
    cost = cost[0] if cost else None
  if not isinstance(cost, Mapping):
    return None
  flops = cost.get("flops")
  try:
    flops = float(flops)
  except (TypeError, ValueError):
    return None
  return flops if np.isfinite(flops) and flops > 0 else None


class StepFlops(NamedTuple):
  flops: float  # FLOPs of one call of the whole program (all devices together)
  source: str  # where the number comes from, for the report
  xla: float | None  # XLA's count per device, if any
  jaxpr: float  # matmul + convolution count of the jaxpr


def step_flops(jaxpr, compiled=None, num_devices: int = 1) -> StepFlops:
  """FLOPs of one step of a jitted function: XLA's count of `compiled` (per device, so
  times `num_devices` for a program whose batch is split over them) when it is at least the
  jaxpr's matmul + convolution count, else that count."""
  floor = jaxpr_flops(jaxpr)
  per_device = None if compiled is None else xla_flops(compiled)
  if per_device is not None and per_device * num_devices >= floor:
    return StepFlops(per_device * num_devices, "XLA cost analysis", per_device, floor)
  source = "jaxpr matmuls + convolutions"
  if compiled is not None:
    source += " (no XLA count)" if per_device is None else " (XLA's count is below it)"
  return StepFlops(floor, source, per_device, floor)


def mfu(flops_per_step: float, steps_per_sec: float, peak_per_device: float | None, n: int):
  """Model FLOPs utilization in [0, 1], or None when the peak or the count is unknown."""
  if not peak_per_device or not flops_per_step or not np.isfinite(flops_per_step):
    return None
  return flops_per_step * steps_per_sec / (peak_per_device * 1e12 * n)


def unknown_peak_message(device_kind: str) -> str:
  return f"n/a (unknown peak for {device_kind}; set system.peak_tflops)"


def describe_mfu(value: float | None, device_kind: str) -> str:
  """'41.3%', or why there is no number."""
  return unknown_peak_message(device_kind) if value is None else f"{100 * value:.1f}%"


def device_peak(config: Any, devices=None) -> tuple[str, float | None]:
  """(device kind, peak TFLOP/s per device) for `config`'s compute dtype and
  `system.peak_tflops` on `devices` (default: all)."""
  kind = (devices or jax.devices())[0].device_kind
  return kind, peak_tflops(kind, config.model.dtype, config.system.peak_tflops)
