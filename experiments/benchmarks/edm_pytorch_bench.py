"""Reference throughput: NVlabs/edm's own PyTorch training step, CIFAR-10 DDPM++ recipe.

The PyTorch side of the issue-13 comparison with train_step_bench.py. It times one training
iteration of EDM's `training/training_loop.py` as `train.py --arch=ddpmpp --precond=edm
--batch=512 [--fp16=True]` configures it for unconditional CIFAR-10, on synthetic 32x32x3
images, with EDM's code imported (never copied) from an unmodified clone of
github.com/NVlabs/edm given as --edm_dir:

  python experiments/benchmarks/edm_pytorch_bench.py --edm_dir=.data/edm            # fp16
  python experiments/benchmarks/edm_pytorch_bench.py --edm_dir=.data/edm --no-fp16  # fp32
  python experiments/benchmarks/edm_pytorch_bench.py --edm_dir=.data/edm --device=cpu \
      --batch=2 --iters=1 --warmup=1 --repeats=1 --no-fp16 --tiny   # CPU smoke run, seconds

What is built, as train.py builds it (dnnlib.util.construct_class_by_name on the same kwargs):
training.networks.EDMPrecond(model_type=SongUNet, positional embedding, standard encoder and
decoder, resample_filter [1,1], model_channels 128, channel_mult [2,2,2], num_blocks 4,
attention at 16x16, dropout 0.13, augment_dim 9, use_fp16=--fp16) = 55,733,891 parameters;
training.loss.EDMLoss; torch.optim.Adam(lr 10e-4, betas (0.9, 0.999), eps 1e-8);
training.augment.AugmentPipe(p=0.12, xflip=1e8, yflip=1, scale=1, rotate_frac=1, aniso=1,
translate_frac=1) with --augment (EDM's CIFAR-10 default), else zero augmentation labels fed
to the same network (the closer match to our side, which has no augmentation pipeline);
the network wrapped in DistributedDataParallel of world size 1 as the loop does on one GPU
(--no-ddp drops it); an EMA copy (copy.deepcopy). What one timed step does, line for line as
the loop body: zero_grad(set_to_none) -> uint8 batch to float32 / 127.5 - 1 -> EDMLoss through
DDP (with the augment pipe) -> training_stats.report('Loss/loss') ->
loss.sum().mul(loss_scaling / batch).backward() -> lr ramp (lr_rampup_kimg 10000) ->
nan_to_num of every gradient -> optimizer.step() -> EMA lerp with ema_halflife_kimg 500 and
ema_rampup_ratio 0.05. Global settings as the loop sets them: cudnn.benchmark = True, TF32
off for cuDNN and matmuls (--tf32 turns both on), no reduced-precision fp16 reductions.
Seeds as the loop: np.random.seed(0), torch.manual_seed(np.random.randint(1 << 31)).

Left out of the step: the DataLoader (the synthetic uint8 batch stays on the device unless
--host_data, which copies it from pinned host memory every step as the loop does) and the
once-per-tick maintenance (status line, snapshots). Timing: --warmup steps (cuDNN autotuning),
then --repeats runs of --iters steps back to back, synchronized at the ends; ms/step is the
median over the runs. Peak GiB is torch.cuda.max_memory_allocated.

What EDM's modules need beyond torch: numpy, and `requests` (dnnlib/util.py imports it at the
top for URL downloads; the step never downloads). The script stops with the package's name
when one is missing; --stub_requests registers an empty `requests` module instead when it is
absent (for hosts without network). psutil, click and Pillow are imported only by
training_loop.py, train.py and dataset.py, which this script does not import.

Compatibility shims (monkeypatches in this process; EDM's files are not touched):
- Python >= 3.12 has no `distutils` (PEP 632), which dnnlib/util.py imports for `strtobool`
  (used only by its ask_yes_no prompt). When `import distutils.util` fails (no setuptools
  shim), a stand-in `distutils.util` module with the same strtobool is registered.
- No PyTorch patch: EDM's step runs unchanged on PyTorch 2.13 (CPU smoke run); if the GPU
  image's 2.11 ever needs one, it belongs here, as a documented monkeypatch.
"""

import argparse
import copy
import hashlib
import importlib.util
import json
import os
import platform
import socket
import subprocess
import sys
import time
import types
import warnings

LOSS_SCALING = 1  # train.py --ls default
LR_RAMPUP_KIMG = 10000  # training_loop default (train.py does not change it)
EMA_HALFLIFE_KIMG = 500  # train.py --ema 0.5 Mimg
EMA_RAMPUP_RATIO = 0.05
AUGMENT_DIM = 9


def _strtobool(val: str) -> int:
  """distutils.util.strtobool as it was in Python 3.11."""
  val = val.lower()
  if val in ("y", "yes", "t", "true", "on", "1"):
    return 1
  if val in ("n", "no", "f", "false", "off", "0"):
    return 0
  raise ValueError(f"invalid truth value {val!r}")


def patch_distutils() -> bool:
  """Registers a stand-in `distutils.util` when Python has none; True if it did."""
  try:
    import distutils.util  # noqa: F401

    return False
  except ImportError:
    pass
  pkg, util = types.ModuleType("distutils"), types.ModuleType("distutils.util")
  pkg.__path__ = []
  util.strtobool = _strtobool
  pkg.util = util
  sys.modules["distutils"], sys.modules["distutils.util"] = pkg, util
  return True


def load_edm(edm_dir: str, stub_requests: bool) -> tuple[types.SimpleNamespace, list[str]]:
  """Imports EDM's modules from the checkout `edm_dir`; returns them and the shims applied."""
  edm_dir = os.path.abspath(edm_dir)
  for sub in ("dnnlib", "torch_utils", "training"):
    if not os.path.isdir(os.path.join(edm_dir, sub)):
      sys.exit(f"--edm_dir={edm_dir}: no {sub}/ there; give a clone of github.com/NVlabs/edm")
  shims = []
  for name, why in (
    ("torch", "PyTorch runs EDM's step"),
    ("numpy", "EDM's dnnlib, torch_utils and training modules import it"),
    ("requests", "EDM's dnnlib/util.py imports it at the top (URL downloads)"),
  ):
    if importlib.util.find_spec(name) is not None:
      continue
    if name == "requests" and stub_requests:
      sys.modules["requests"] = types.ModuleType("requests")
      shims.append("requests stub")
      continue
    hint = " (or --stub_requests: never used by the step)" if name == "requests" else ""
    sys.exit(f"missing Python package '{name}': {why}. pip install {name}{hint}")
  if patch_distutils():
    shims.append("distutils.util.strtobool stand-in")
  sys.path.insert(0, edm_dir)
  import dnnlib
  from torch_utils import distributed, misc, training_stats

  for mod in (dnnlib, distributed):  # make sure these came from --edm_dir, not elsewhere
    if not os.path.abspath(mod.__file__).startswith(edm_dir + os.sep):
      sys.exit(f"{mod.__name__} was imported from {mod.__file__}, not from {edm_dir}")
  return (
    types.SimpleNamespace(dnnlib=dnnlib, dist=distributed, misc=misc, stats=training_stats),
    shims,
  )


def edm_version(edm_dir: str) -> str:
  """The checkout's git commit if `edm_dir` is the top of a git clone, and a short SHA-256 of
  its .py files (names and contents), which identifies an archive extract as well."""
  h = hashlib.sha256()
  for root, dirs, files in os.walk(edm_dir):
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    for f in sorted(files):
      if f.endswith(".py"):
        path = os.path.join(root, f)
        h.update(os.path.relpath(path, edm_dir).encode() + b"\0")
        with open(path, "rb") as fh:
          h.update(fh.read())
  commit = "no git clone"
  try:
    top = subprocess.run(
      ["git", "-C", edm_dir, "rev-parse", "--show-toplevel", "HEAD"],
      capture_output=True,
      text=True,
      check=True,
    ).stdout.split()
    if os.path.realpath(top[0]) == os.path.realpath(edm_dir):
      commit = top[1]
  except (OSError, subprocess.CalledProcessError):
    pass
  return f"{commit}, py sha256 {h.hexdigest()[:12]}"


def init_process_group(edm, device) -> None:
  """One-process DDP group, as torch_utils.distributed.init() makes it on one GPU."""
  import torch

  if "MASTER_PORT" not in os.environ:  # EDM's default is 29500; take a free port instead
    with socket.socket() as s:
      s.bind(("localhost", 0))
      os.environ["MASTER_PORT"] = str(s.getsockname()[1])
  if device.type == "cuda":
    edm.dist.init()  # nccl, env:// rendezvous, cuda.set_device(LOCAL_RANK)
  else:
    for k, v in (("MASTER_ADDR", "localhost"), ("RANK", "0"), ("WORLD_SIZE", "1")):
      os.environ.setdefault(k, v)
    torch.distributed.init_process_group(backend="gloo", init_method="env://")
    edm.stats.init_multiprocessing(rank=0, sync_device=None)


def build(args, edm, device):
  """Network, loss, optimizer, augment pipe, DDP wrapper and EMA as train.py + the loop."""
  import numpy as np
  import torch

  dnnlib = edm.dnnlib
  seed = 0
  np.random.seed(seed)  # noqa: NPY002 -- the global RNGs, seeded as the loop seeds them
  torch.manual_seed(np.random.randint(1 << 31))  # noqa: NPY002
  torch.backends.cudnn.benchmark = True
  torch.backends.cudnn.allow_tf32 = args.tf32
  torch.backends.cuda.matmul.allow_tf32 = args.tf32
  torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False

  network_kwargs = dnnlib.EasyDict(class_name="training.networks.EDMPrecond")
  network_kwargs.update(model_type="SongUNet", embedding_type="positional", encoder_type="standard")
  network_kwargs.update(decoder_type="standard", channel_mult_noise=1, resample_filter=[1, 1])
  network_kwargs.update(model_channels=128, channel_mult=[2, 2, 2])
  if args.tiny:
    network_kwargs.update(model_channels=16, num_blocks=1)
  network_kwargs.augment_dim = AUGMENT_DIM
  network_kwargs.update(dropout=0.13, use_fp16=args.fp16)
  loss_kwargs = dnnlib.EasyDict(class_name="training.loss.EDMLoss")
  optimizer_kwargs = dnnlib.EasyDict(
    class_name="torch.optim.Adam", lr=10e-4, betas=[0.9, 0.999], eps=1e-8
  )
  augment_kwargs = dnnlib.EasyDict(class_name="training.augment.AugmentPipe", p=0.12)
  augment_kwargs.update(xflip=1e8, yflip=1, scale=1, rotate_frac=1, aniso=1, translate_frac=1)

  interface_kwargs = dict(img_resolution=32, img_channels=3, label_dim=0)
  net = dnnlib.util.construct_class_by_name(**network_kwargs, **interface_kwargs)
  net.train().requires_grad_(True).to(device)
  loss_fn = dnnlib.util.construct_class_by_name(**loss_kwargs)
  optimizer = dnnlib.util.construct_class_by_name(params=net.parameters(), **optimizer_kwargs)
  if args.augment:
    augment_pipe = dnnlib.util.construct_class_by_name(**augment_kwargs)
  else:  # same network, augmentation labels all zero ("no augmentation")

    def augment_pipe(images):
      return images, torch.zeros([images.shape[0], AUGMENT_DIM], device=images.device)

  if args.ddp:
    ids = [device] if device.type == "cuda" else None
    ddp = torch.nn.parallel.DistributedDataParallel(net, device_ids=ids)
  else:
    ddp = net
  ema = copy.deepcopy(net).eval().requires_grad_(False)
  return net, ddp, ema, loss_fn, optimizer, optimizer_kwargs, augment_pipe


def bench(args, edm, device) -> dict:
  import torch

  net, ddp, ema, loss_fn, optimizer, optimizer_kwargs, augment_pipe = build(args, edm, device)
  params = sum(p.numel() for p in net.parameters())
  gen = torch.Generator().manual_seed(0)
  images_u8 = torch.randint(0, 256, [args.batch, 3, 32, 32], dtype=torch.uint8, generator=gen)
  labels_src = torch.zeros([args.batch, 0])  # unconditional: ImageFolderDataset labels [B, 0]
  if args.host_data:
    if device.type == "cuda":
      images_u8, labels_src = images_u8.pin_memory(), labels_src.pin_memory()
  else:
    images_u8, labels_src = images_u8.to(device), labels_src.to(device)
  batch_size = batch_gpu_total = args.batch
  cur_nimg = 0

  def step():  # the body of training_loop's `while True`, up to the tick maintenance
    nonlocal cur_nimg
    optimizer.zero_grad(set_to_none=True)
    with edm.misc.ddp_sync(ddp, True):  # one accumulation round
      images = images_u8.to(device).to(torch.float32) / 127.5 - 1
      labels = labels_src.to(device)
      loss = loss_fn(net=ddp, images=images, labels=labels, augment_pipe=augment_pipe)
      edm.stats.report("Loss/loss", loss)
      loss.sum().mul(LOSS_SCALING / batch_gpu_total).backward()
    for g in optimizer.param_groups:
      g["lr"] = optimizer_kwargs["lr"] * min(cur_nimg / max(LR_RAMPUP_KIMG * 1000, 1e-8), 1)
    for param in net.parameters():
      if param.grad is not None:
        torch.nan_to_num(param.grad, nan=0, posinf=1e5, neginf=-1e5, out=param.grad)
    optimizer.step()
    ema_halflife_nimg = EMA_HALFLIFE_KIMG * 1000
    if EMA_RAMPUP_RATIO is not None:
      ema_halflife_nimg = min(ema_halflife_nimg, cur_nimg * EMA_RAMPUP_RATIO)
    ema_beta = 0.5 ** (batch_size / max(ema_halflife_nimg, 1e-8))
    for p_ema, p_net in zip(ema.parameters(), net.parameters(), strict=True):
      p_ema.copy_(p_net.detach().lerp(p_ema, ema_beta))
    cur_nimg += batch_size
    return loss

  sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
  for _ in range(args.warmup):
    step()
  sync()
  times = []
  for _ in range(args.repeats):
    t = time.perf_counter()
    for _ in range(args.iters):
      loss = step()
    sync()
    times.append((time.perf_counter() - t) / args.iters)
  dt = sorted(times)[len(times) // 2]
  peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
  return {
    "params": params,
    "step_ms": dt * 1e3,
    "step_ms_all": [t * 1e3 for t in times],
    "images_per_s": args.batch / dt,
    "peak_mem_gib": peak,
    "loss_finite": bool(torch.isfinite(loss).all()),
  }


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--edm_dir", required=True, help="an unmodified clone of NVlabs/edm")
  p.add_argument("--batch", type=int, default=512)
  p.add_argument(
    "--fp16",
    action=argparse.BooleanOptionalAction,
    default=True,
    help="EDM's --fp16=True (use_fp16: the UNet in float16; on CUDA only, as EDM)",
  )
  p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True)
  p.add_argument("--ddp", action=argparse.BooleanOptionalAction, default=True)
  p.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=False)
  p.add_argument("--host_data", action=argparse.BooleanOptionalAction, default=False)
  p.add_argument("--tiny", action="store_true", help="model_channels 16, one block per level")
  p.add_argument("--iters", type=int, default=10, help="steps per timed run")
  p.add_argument("--repeats", type=int, default=5, help="timed runs; ms/step is their median")
  p.add_argument("--warmup", type=int, default=5)
  p.add_argument("--device", default="cuda")
  p.add_argument("--stub_requests", action="store_true", help="stand in for a missing requests")
  p.add_argument("--json_out", default="", help="also write the result here as JSON")
  args = p.parse_args()

  edm, shims = load_edm(args.edm_dir, args.stub_requests)
  # train.py: "False warning printed by PyTorch 1.12."
  warnings.filterwarnings("ignore", "Grad strides do not match bucket view strides")
  import torch

  device = torch.device(args.device)
  if device.type == "cuda" and not torch.cuda.is_available():
    sys.exit("--device=cuda but torch.cuda.is_available() is False (pass --device=cpu)")
  if args.ddp:
    init_process_group(edm, device)
  if device.type == "cuda":
    name = torch.cuda.get_device_name(device)
  else:
    name = f"CPU {platform.machine()} x {torch.get_num_threads()} threads"
  fp16 = args.fp16 and device.type == "cuda"  # EDMPrecond runs float16 on CUDA only
  mode = "fp16" if fp16 else ("fp32+tf32" if args.tf32 else "fp32")
  extras = [
    "augment p=0.12" if args.augment else "no augment",
    "DDP" if args.ddp else "no DDP",
    *(["tiny"] if args.tiny else []),
    *(["host data"] if args.host_data else []),
  ]
  print(f"EDM ({edm_version(args.edm_dir)}) from {os.path.abspath(args.edm_dir)}")
  print(f"shims: {', '.join(shims) or 'none'}")
  r = bench(args, edm, device)
  peak = f"{r['peak_mem_gib']:.1f}" if r["peak_mem_gib"] is not None else "n/a"
  print("| device | torch | mode | batch | params | ms/step | images/s | peak GiB |")
  print("|---|---|---|---|---|---|---|---|")
  print(
    f"| {name} | {torch.__version__} | {mode} ({', '.join(extras)}) | {args.batch} | "
    f"{r['params']:,} | {r['step_ms']:.1f} | {r['images_per_s']:.0f} | {peak} |",
    flush=True,
  )
  if not r["loss_finite"]:
    print("  warning: the last loss was not finite")
  if args.json_out:
    record = dict(
      vars(args),
      device_name=name,
      torch=torch.__version__,
      mode=mode,
      extras=extras,
      edm_version=edm_version(args.edm_dir),
      shims=shims,
      **r,
    )
    with open(args.json_out, "w") as f:
      json.dump(record, f, indent=2)
  if args.ddp:
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
  main()
