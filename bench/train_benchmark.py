"""Training, input-pipeline and evaluation throughput, JAX against a PyTorch twin.

    python bench/train_benchmark.py [--repeats=4] [--window_steps=10] \
        [--predict_workdir=runs/vae] [--data_dir=/tmp/bench_tfds]

Writes docs/benchmarks.md and docs/figures/benchmark_throughput.png (about 24
minutes on the idle 2 cores; --noablations skips the settings phase).

Why it is built this way:
  * Each framework runs in its own worker process, so each gets its own peak
    memory (ru_maxrss) and neither's thread pools or allocator state leak into
    the other's numbers. The parent only schedules.
  * The machine is shared: timed windows of the frameworks are interleaved
    (JAX, PyTorch, JAX, PyTorch, ...) so both see the same background load,
    and medians are reported.
  * Training throughput is measured on a fixed device-resident batch: it is the
    train step alone. The input pipeline is measured on its own and must be
    faster, otherwise it, not the step, bounds training.
  * Where the step's time goes: forward against forward + backward, and a
    jax.profiler trace grouped by kind of operation.
  * Settings and changes, AE, in a later phase interleaved with the two defaults
    again (so the headline rounds run with only two worker processes alive):
    extra JAX workers (1, 2 and 8 devices, no buffer donation, XLA library
    options, and each speed change of benchmark_report.CHANGES undone with
    --undo: bench/undone.py) and PyTorch workers (channels-last, 1 thread,
    the JAX models' upsampling rewrite).
  * JAX workers start with the malloc setting of a training process (launch.py
    restarts itself with glibc's huge-page tunable: brainseg_jax/host_memory.py)
    and compile ahead as train.py does; the twin gets that setting too as one of
    the settings.
  * Peak memory: a fresh worker per model and framework (and per memory change
    undone) that trains that model alone, as a training process would.
  * With --predict_workdir, bench/predict_benchmark.py's stage table of a raw
    scan to its report joins the report.
"""

import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from absl import app, flags  # noqa: E402

from bench import benchmark_report  # noqa: E402
from brainseg_jax import host_memory  # noqa: E402

flags.DEFINE_integer("repeats", 4, "Timed windows per framework and model (medians reported).")
flags.DEFINE_integer("window_steps", 10, "Train steps per timed window.")
flags.DEFINE_integer("warmup_steps", 2, "Untimed steps after compilation.")
flags.DEFINE_string("data_dir", "/tmp/bench_tfds", "TFDS data dir (synthetic_brain built there).")
flags.DEFINE_integer("ablation_repeats", 3, "Timed windows per setting tried.")
flags.DEFINE_bool("ablations", True, "Also time the settings tried (device count, donation, "
                  "PyTorch channels-last).")
flags.DEFINE_string("output", os.path.join(ROOT, "docs", "benchmarks.md"), "Markdown report.")
flags.DEFINE_string("results", "/tmp/train_benchmark_results.json", "Raw results (JSON).")
flags.DEFINE_bool("render_only", False, "Re-render the report from --results, measure nothing.")
flags.DEFINE_string("predict_workdir", "", "A trained default VAE run: also time predict stage by "
                    "stage (bench/predict_benchmark.py) on its default scans; empty: skip.")
# Worker-side flags (set by the parent, not by hand).
flags.DEFINE_enum("worker", None, ["jax", "torch"], "Run as a worker process.")
flags.DEFINE_integer("devices", None, "JAX worker: XLA CPU devices (default: as training, "
                     "two per core: parallel.default_cpu_devices).")
flags.DEFINE_string("xla_flags", "", "JAX worker: extra XLA_FLAGS (settings tried).")
flags.DEFINE_bool("donate", True, "JAX worker: donate the train state to the step.")
flags.DEFINE_list("undo", [], "JAX worker: changes to undo, to measure what each bought "
                  "(keys of benchmark_report.CHANGES).")
flags.DEFINE_bool("flops", True, "JAX worker: count the step's FLOPs (one more compilation).")
flags.DEFINE_bool("channels_last", False, "PyTorch worker: channels-last memory format.")
flags.DEFINE_bool("fused_upsample", False, "PyTorch worker: resize + conv computed as the JAX "
                  "models do (torch_twin.upsample_conv).")
flags.DEFINE_integer("threads", 2, "PyTorch worker: intra-op threads (one per core).")
flags.DEFINE_bool("torch_compile", False, "PyTorch worker: the twin under torch.compile "
                  "(inductor).")
flags.DEFINE_bool("huge_pages", False, "PyTorch worker: started with glibc's huge-page malloc, "
                  "as JAX workers are (the parent sets the tunable before the process starts).")
FLAGS = flags.FLAGS

MODELS = benchmark_report.MODELS
# The headline's workers per model, timed in this order each round.
HEADLINE = ("jax", "torch", "torch_compiled")
FRESH_DEFAULT = benchmark_report.FRESH_DEFAULT
GEMM_SIZE = 2048
_REPLY = "@@BENCH@@"


def _config(name):
  from configs import ae, unet_dae, vae
  return {"ae": ae, "vae": vae, "unet_dae": unet_dae}[name].get_config()


def _synthetic_batch(config):
  """A training batch of random images (the PyTorch twin gets the same images, NCHW).

  The brain mask is a centred disc: the U-Net adds its noise and counts its loss
  inside it (AE and VAE ignore it); both frameworks get the same mask.
  """
  import numpy as np
  size = config.dataset.resolution
  images = np.random.default_rng(0).random((config.batch_size, size, size, 1), np.float32)
  yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
  disc = (yy ** 2 + xx ** 2 < (0.4 * size) ** 2)[None, :, :, None]
  return {"image": images, "brain_mask": np.broadcast_to(disc, images.shape).copy()}


def _maxrss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _median_rate(work_per_call, seconds):
  return work_per_call / statistics.median(seconds)


def _gemm_gflops(matmul, repeats=7) -> float:
  """Median GFLOP/s of a GEMM_SIZE^2 float32 matmul (2 n^3 flops)."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    matmul()
    times.append(time.perf_counter() - start)
  return 2 * GEMM_SIZE ** 3 / statistics.median(times) / 1e9


# --------------------------------------------------------------------------- JAX worker


class JaxWorker:
  """Holds one jitted train step per model on a `--devices` mesh, as train.py builds it.

  With --undo, the changes named are put back as they were (bench/undone.py): the
  process-wide ones here, the initial state by `create_train_state`, and the
  layers' kernels by `kernels`, which _serve puts in use for every command.
  """

  def __init__(self):
    from brainseg_jax import parallel
    if FLAGS.xla_flags:
      os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FLAGS.xla_flags}".strip()
    parallel.split_host_into_devices(FLAGS.devices)
    from bench import undone
    undone.undo_in_process(FLAGS.undo)
    self.kernels = undone.undone_kernels(FLAGS.undo)
    self.create_train_state = undone.create_train_state(FLAGS.undo)
    import jax
    self.jax = jax
    self.mesh = parallel.data_mesh()
    self.models = {}

  def setup(self, name):
    """Builds state and step; times the first (compiling) call apart from the next ones."""
    import jax
    import jax.numpy as jnp

    from brainseg_jax import parallel, train
    from brainseg_jax.models import create_model
    config = _config(name)
    model = create_model(config)
    host_state = self.create_train_state(model, config)
    params = sum(x.size for x in jax.tree.leaves(host_state.params))
    batch_np = _synthetic_batch(config)

    # Total work of one step: XLA's cost analysis of the unpartitioned global-batch step
    # (skipped in the memory phase: training never compiles it).
    flops = None
    if FLAGS.flops:
      device_batch = jax.tree.map(jnp.asarray, batch_np)
      compiled = jax.jit(model.train_step).lower(host_state, device_batch).compile()
      cost = compiled.cost_analysis()
      cost = cost[0] if isinstance(cost, list | tuple) else cost
      flops = float(cost["flops"])

    state = jax.device_put(host_state, parallel.replicated(self.mesh))
    del host_state
    batch = jax.device_put(batch_np, parallel.batch_sharded(self.mesh))
    if FLAGS.donate:
      step = train.jit_train_step(model, self.mesh)
    else:
      replicated = parallel.replicated(self.mesh)
      step = jax.jit(model.train_step, static_argnums=2,
                     in_shardings=(replicated, parallel.batch_sharded(self.mesh)),
                     out_shardings=(replicated, replicated))
    start = time.perf_counter()
    train.compile_ahead(step, state, batch)
    state, metrics = step(state, batch, 0)
    jax.block_until_ready(metrics)
    first = time.perf_counter() - start
    second_times = []
    for _ in range(FLAGS.warmup_steps):
      start = time.perf_counter()
      state, metrics = step(state, batch, 0)
      jax.block_until_ready(metrics)
      second_times.append(time.perf_counter() - start)
    self.models[name] = dict(model=model, step=step, state=state, batch=batch, config=config)
    return dict(params=params, flops=flops, first_call=first,
                warm_step=statistics.median(second_times), batch=config.batch_size)

  def window(self, name, steps):
    m = self.models[name]
    state = m["state"]
    start = time.perf_counter()
    for _ in range(steps):
      state, metrics = m["step"](state, m["batch"], 0)
    self.jax.block_until_ready((state, metrics))
    seconds = time.perf_counter() - start
    m["state"] = state
    return dict(seconds=seconds, loss=float(metrics["loss"]), cache_size=m["step"]._cache_size())

  def profile(self, name, repeats):
    """Forward-only and forward+backward times, to see where the step's time goes."""
    import jax

    from brainseg_jax import parallel
    m = self.models[name]
    config = m["config"]
    replicated, sharded = parallel.replicated(self.mesh), parallel.batch_sharded(self.mesh)
    # The loss with the step's randomness: train_step minus the optimiser update.
    loss_of = lambda params, batch: _loss(config, params, batch)
    forward = jax.jit(loss_of, in_shardings=(replicated, sharded))
    backward = jax.jit(jax.grad(loss_of), in_shardings=(replicated, sharded),
                       out_shardings=replicated)
    params = m["state"].params
    result = {}
    for label, fn in (("forward", forward), ("forward_backward", backward)):
      jax.block_until_ready(fn(params, m["batch"]))
      times = []
      for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(params, m["batch"]))
        times.append(time.perf_counter() - start)
      result[label] = statistics.median(times)
    return result

  def op_profile(self, name, steps=3):
    """Where the step's thread time goes, by kind of XLA operation (jax.profiler trace).

    Sums the durations of the compiled step's own operations over every device
    thread (so the total can exceed the wall time: the device threads share the cores)
    and groups them by what each is, from the optimised HLO.
    """
    import collections
    import glob
    import gzip
    import re
    import tempfile

    import jax
    m = self.models[name]
    state = m["state"]
    kinds = {}
    for line in m["step"].lower(state, m["batch"], 0).compile().as_text().splitlines():
      # "%name = shape opcode(": the shape may be a tuple (the gradient all-reduce, fusions
      # with several outputs).
      match = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (?:\([^()]*\)|\S+) (\w[\w\-]*)\(", line)
      if match:
        kinds[match.group(1)] = _op_kind(match.group(1), match.group(2), line)
    with tempfile.TemporaryDirectory() as trace_dir:
      with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        for _ in range(steps):
          state, metrics = m["step"](state, m["batch"], 0)
        jax.block_until_ready((state, metrics))
      (trace,) = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)
      with gzip.open(trace) as f:
        events = json.load(f)["traceEvents"]
    m["state"] = state
    totals = collections.Counter()
    for event in events:
      if event.get("ph") == "X" and event.get("name") in kinds:
        totals[kinds[event["name"]]] += event["dur"] / 1e6 / steps  # s per step
    return dict(seconds_per_step=dict(totals))

  def gemm(self):
    import jax
    import jax.numpy as jnp
    import numpy as np
    a = np.random.default_rng(0).random((GEMM_SIZE, GEMM_SIZE), np.float32)
    b = np.random.default_rng(1).random((GEMM_SIZE, GEMM_SIZE), np.float32)
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    matmul = jax.jit(jnp.dot)
    jax.block_until_ready(matmul(ja, jb))
    np.dot(a, b)
    return dict(jax=_gemm_gflops(lambda: jax.block_until_ready(matmul(ja, jb))),
                numpy=_gemm_gflops(lambda: np.dot(a, b)))

  def pipeline(self, batches):
    """images/s out of the TFDS + grain pipeline that train.py reads (first batch untimed)."""
    from brainseg_jax.datasets import input_pipeline
    config = _config("ae")
    config.dataset.data_dir = FLAGS.data_dir
    start = time.perf_counter()
    builder = input_pipeline.get_builder(config.dataset)
    prepare = time.perf_counter() - start
    iterator = input_pipeline.train_batches(builder, config.batch_size, config.seed)
    next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
      next(iterator)
    seconds = time.perf_counter() - start
    return dict(images_per_s=batches * config.batch_size / seconds, prepare_seconds=prepare)

  def evaluate(self):
    """Test volumes/s through VolumeScorer (the VAE: default model of the scoring bench)."""
    from brainseg_jax import scoring
    from brainseg_jax.datasets import input_pipeline
    config = _config("vae")
    config.dataset.data_dir = FLAGS.data_dir
    builder = input_pipeline.get_builder(config.dataset)
    volumes = input_pipeline.load_volumes(builder, "test")
    m = self.models["vae"]
    scorer = scoring.scorer_for(m["model"], config)
    state = scorer.place(m["state"])
    start = time.perf_counter()
    scorer(state, volumes[0].image, volumes[0].brain_mask)
    first = time.perf_counter() - start
    start = time.perf_counter()
    slices = 0
    for volume in volumes:
      scorer(state, volume.image, volume.brain_mask)
      slices += volume.image.shape[0]
    seconds = time.perf_counter() - start
    return dict(volumes=len(volumes), volumes_per_s=len(volumes) / seconds,
                slices_per_s=slices / seconds, first_call=first,
                compiled_versions=scorer.compiled_versions())

  def versions(self):
    import flax
    import jax
    import numpy as np
    import optax
    return dict(jax=jax.__version__, flax=flax.__version__, optax=optax.__version__,
                numpy=np.__version__, devices=f"{jax.device_count()} x {jax.devices()[0].platform}",
                device_count=jax.device_count(),
                onednn="--xla_cpu_use_onednn=true" in os.environ.get("XLA_FLAGS", ""),
                cpu=_cpu_model())


def _cpu_model() -> str:
  """'<model name> (family F, model M)' from /proc/cpuinfo: the ratios depend on the CPU."""
  fields = {}
  with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
    for line in f:
      key, _, value = line.partition(":")
      fields.setdefault(key.strip(), value.strip())
  if "model name" not in fields:
    return platform.processor() or "unknown"
  return (f"{fields['model name']} (family {fields.get('cpu family', '?')}, "
          f"model {fields.get('model', '?')})")


def _op_kind(name, opcode, line) -> str:
  """The kind of operation (a row of the report's profile table) of an optimised-HLO op."""
  if opcode == "all-reduce" or name.startswith("all-reduce"):
    return "gradient all-reduce between devices"
  if opcode in ("convolution", "dot") or "ynn_fusion" in line or "xnn_fusion" in line:
    return "convolutions and matrix products"
  if name.startswith(("transpose", "copy")) or opcode in ("transpose", "copy"):
    return "layout copies (transposes)"
  if opcode == "fusion" or name.endswith("fusion"):
    return "elementwise and reductions (fused loops)"
  return "other"


def _loss(config, params, batch):
  """The model's training loss (same randomness as step 0), from the config's family."""
  import functools

  import jax

  from brainseg_jax.models import ae, layers, unet, unet_dae, vae
  rng = jax.random.fold_in(jax.random.key(config.seed), 0)
  if config.model.name == "unet_dae":
    m = config.model
    fn = functools.partial(unet_dae.loss_fn, unet.UNet(unet.UNetArchitecture.from_config(m)),
                           noise_std=m.noise_std, noise_resolution=m.noise_resolution)
    return fn(params, batch, rng)[0]
  architecture = layers.Architecture.from_config(config.model)
  if config.model.name == "ae":
    fn = functools.partial(ae.loss_fn, ae.AutoEncoder(architecture))
  else:
    fn = functools.partial(vae.loss_fn, vae.VariationalAutoEncoder(architecture),
                           kl_weight=config.model.kl_weight)
  return fn(params, batch, rng)[0]


# ------------------------------------------------------------------------- PyTorch worker


class TorchWorker:
  """The twin of each model, eager PyTorch, `--threads` intra-op threads."""

  def __init__(self):
    import torch
    torch.set_num_threads(FLAGS.threads)
    torch.manual_seed(0)
    self.torch = torch
    self.models = {}

  def setup(self, name):
    from bench import torch_twin
    config = _config(name)
    module, step = torch_twin.create(config, fused_upsample=FLAGS.fused_upsample,
                                     compiled=FLAGS.torch_compile)
    # The JAX worker's images and brain masks, NCHW.
    batch = _synthetic_batch(config)
    images, brain = (self.torch.tensor(batch[k]).permute(0, 3, 1, 2).contiguous()
                     for k in ("image", "brain_mask"))
    if FLAGS.channels_last:
      module = module.to(memory_format=self.torch.channels_last)
      images = images.contiguous(memory_format=self.torch.channels_last)
      brain = brain.contiguous(memory_format=self.torch.channels_last)
    start = time.perf_counter()
    step(images, brain)
    first = time.perf_counter() - start
    times = []
    for _ in range(FLAGS.warmup_steps):
      start = time.perf_counter()
      step(images, brain)
      times.append(time.perf_counter() - start)
    self.models[name] = dict(step=step, images=images, brain=brain)
    return dict(params=torch_twin.num_parameters(module), first_call=first,
                warm_step=statistics.median(times), batch=config.batch_size)

  def window(self, name, steps):
    m = self.models[name]
    start = time.perf_counter()
    for _ in range(steps):
      loss = m["step"](m["images"], m["brain"])
    return dict(seconds=time.perf_counter() - start, loss=float(loss))

  def gemm(self):
    a = self.torch.rand(GEMM_SIZE, GEMM_SIZE)
    b = self.torch.rand(GEMM_SIZE, GEMM_SIZE)
    a @ b
    return dict(torch=_gemm_gflops(lambda: a @ b))

  def versions(self):
    return dict(torch=self.torch.__version__, threads=self.torch.get_num_threads())


def _serve():
  """Worker loop: one JSON command per stdin line, one tagged JSON reply per stdout line."""
  worker = JaxWorker() if FLAGS.worker == "jax" else TorchWorker()
  if FLAGS.worker == "jax":
    from brainseg_jax.models import kernels
    in_use = kernels.use(worker.kernels)  # every trace of this worker: its --undo kernels
  else:
    in_use = contextlib.nullcontext()
  with in_use:
    print(_REPLY + json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
      command = json.loads(line)
      method = command.pop("call")
      if method == "exit":
        break
      try:
        result = getattr(worker, method)(**command) if method != "maxrss" else {}
        result["maxrss_mb"] = _maxrss_mb()
      except Exception as e:  # reported to the parent, which decides
        result = {"error": f"{type(e).__name__}: {e}"}
      print(_REPLY + json.dumps(result), flush=True)


class Worker:
  """Parent-side handle of a worker process."""

  def __init__(self, label, *args):
    self.label = label
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
    # Malloc as a training process has it (launch.py restarts itself with it): JAX workers
    # unless that change is undone; the twin only where asked for (--huge_pages).
    if ("--worker=jax" in args and "--undo=huge_pages" not in args) or "--huge_pages" in args:
      env = host_memory.with_huge_pages(env)
    self.process = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), *args], cwd=ROOT, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    self._read()

  def _read(self):
    for line in self.process.stdout:
      if line.startswith(_REPLY):
        return json.loads(line[len(_REPLY):])
    raise RuntimeError(f"worker {self.label} exited with {self.process.wait()}")

  def __call__(self, method, **kwargs):
    self.process.stdin.write(json.dumps({"call": method, **kwargs}) + "\n")
    self.process.stdin.flush()
    result = self._read()
    if "error" in result:
      raise RuntimeError(f"{self.label}.{method}: {result['error']}")
    return result

  def close(self):
    self.process.stdin.write(json.dumps({"call": "exit"}) + "\n")
    self.process.stdin.flush()
    self.process.wait(timeout=60)


# -------------------------------------------------------------------------------- parent


def _log(message):
  print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _uptime() -> str:
  return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def run_benchmark():
  started = time.time()
  date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
  load_before = _uptime()
  _log(f"load: {load_before}")
  # One process per framework and model, as each training process is. One process for all
  # three models ran the twin's AE 0.36 instead of 0.49 s/step: setting up the U-Net there
  # left glibc's heap in a state that spared the AE 90,000 page faults per step, which a
  # process training the AE does not have.
  worker_args = {"jax": ("--worker=jax",),
                 "torch": ("--worker=torch", f"--threads={FLAGS.threads}"),
                 "torch_compiled": ("--worker=torch", f"--threads={FLAGS.threads}",
                                    "--torch_compile")}
  model_workers, setup = {}, {}
  for name in MODELS:
    for label in HEADLINE:
      _log(f"setup {label} {name}")
      model_workers[label, name] = Worker(f"{label} {name}", *worker_args[label])
      setup[label, name] = model_workers[label, name]("setup", name=name)
    for twin in HEADLINE[1:]:
      assert setup["jax", name]["params"] == setup[twin, name]["params"], (
          f"{name}: JAX has {setup['jax', name]['params']} parameters, the {twin} twin "
          f"{setup[twin, name]['params']}")

  # Headline: interleaved timed windows, JAX, eager, compiled, for each model, each round.
  windows = {key: [] for key in setup}
  cache_sizes = {}
  for round_index in range(FLAGS.repeats):
    _log(f"round {round_index + 1}/{FLAGS.repeats}  {_uptime()}")
    for name in MODELS:
      for label in HEADLINE:
        result = model_workers[label, name]("window", name=name, steps=FLAGS.window_steps)
        windows[label, name].append(result["seconds"])
        if "cache_size" in result:
          cache_sizes[label, name] = result["cache_size"]
  load_during = _uptime()

  _log("profile: forward / forward+backward, and by kind of operation")
  profile = {name: model_workers["jax", name]("profile", name=name, repeats=FLAGS.repeats)
             for name in MODELS}
  # The AE's processes go on as the defaults of the later phases; the others are done.
  workers = {label: model_workers[label, "ae"] for label in ("jax", "torch")}
  for (label, name), worker in model_workers.items():
    if (name != "ae" or label == "torch_compiled") and (label, name) != ("jax", "vae"):
      worker.close()
  op_profile = _op_profile_phase()
  _log("GEMM peak")
  gemm = {**workers["jax"]("gemm"), **workers["torch"]("gemm")}
  versions = {**workers["jax"]("versions"), **workers["torch"]("versions")}

  # Settings tried, AE only, in a phase of their own (their worker processes do not exist
  # during the headline), interleaved with the two defaults as the baseline of this phase.
  if FLAGS.ablations:
    variants = {FRESH_DEFAULT: ("--worker=jax",),
                **{label: ("--worker=jax", f"--undo={change}")
                   for change, label in benchmark_report.SPEED_CHANGES.items()},
                benchmark_report.TORCH_FUSED: ("--worker=torch", "--fused_upsample",
                                               f"--threads={FLAGS.threads}"),
                benchmark_report.TORCH_HUGE_PAGES: ("--worker=torch", "--huge_pages",
                                                    f"--threads={FLAGS.threads}"),
                **{f"jax, {n} device{'s' * (n > 1)}": ("--worker=jax", f"--devices={n}")
                   for n in (1, 2, 4, 8)},
                "jax, no donation": ("--worker=jax", "--nodonate"),
                benchmark_report.ONEDNN: ("--worker=jax", "--xla_flags=--xla_cpu_use_onednn=true"),
                "jax, XNNPACK": ("--worker=jax", "--xla_flags=--xla_cpu_use_xnnpack=true"),
                "torch, channels-last": ("--worker=torch", "--channels_last",
                                         f"--threads={FLAGS.threads}"),
                "torch, 1 thread": ("--worker=torch", "--threads=1")}
    for label, args in variants.items():
      _log(f"setup {label} ae")
      workers[label] = Worker(label, *args)
      setup[label, "ae"] = workers[label]("setup", name="ae")
    for round_index in range(FLAGS.ablation_repeats):
      _log(f"settings round {round_index + 1}/{FLAGS.ablation_repeats}  {_uptime()}")
      for label in ("jax", "torch", *variants):
        result = workers[label]("window", name="ae", steps=FLAGS.window_steps)
        windows.setdefault((label, "ae_settings"), []).append(result["seconds"])
        if "cache_size" in result:
          cache_sizes[label, "ae_settings"] = result["cache_size"]
  # After the settings phase: the pipeline's reader threads must not share the cores
  # with the default worker's timed windows there.
  _log("input pipeline")
  pipeline = workers["jax"]("pipeline", batches=20)
  _log("evaluation")
  evaluation = model_workers["jax", "vae"]("evaluate")
  model_workers["jax", "vae"].close()
  for worker in workers.values():
    worker.close()
  memory = _memory_phase()
  predict = None
  if FLAGS.predict_workdir:
    _log("predict, stage by stage")
    from bench import predict_benchmark
    predict = predict_benchmark.run(FLAGS.predict_workdir,
                                    [str(p) for p in predict_benchmark.DEFAULT_SCANS])
    predict["markdown"] = predict_benchmark.markdown(predict, FLAGS.predict_workdir)

  results = dict(date=date, load_before=load_before, load_during=load_during,
                 load_after=_uptime(), setup={f"{k[0]}|{k[1]}": v for k, v in setup.items()},
                 windows={f"{k[0]}|{k[1]}": v for k, v in windows.items()},
                 cache_sizes={f"{k[0]}|{k[1]}": v for k, v in cache_sizes.items()},
                 memory=memory, profile=profile, op_profile=op_profile, gemm=gemm,
                 versions=versions, predict=predict,
                 pipeline=pipeline, evaluation=evaluation,
                 runtime_s=time.time() - started, window_steps=FLAGS.window_steps,
                 repeats=FLAGS.repeats, ablation_repeats=FLAGS.ablation_repeats,
                 python=platform.python_version())
  return results


def _op_profile_phase():
  """The step's thread time by kind of operation, traced in a worker of its own.

  The profiler is started and stopped in a separate process so that no trace
  state can touch the timed workers.
  """
  worker = Worker("jax profile", "--worker=jax", "--noflops")
  seconds = {}
  for name in MODELS:
    worker("setup", name=name)
    seconds[name] = worker("op_profile", name=name)["seconds_per_step"]
  worker.close()
  return seconds


def _memory_phase():
  """Peak RSS of a process that trains one model: a fresh worker per model and framework.

  Each sets the model up as training does (no FLOP count) and runs a timed
  window, then reports ru_maxrss. JAX workers with a memory change undone
  measure what that change saved (benchmark_report.MEMORY_CHANGES).
  """
  from bench.benchmark_report import MEMORY_CHANGES
  runs = {"jax": ("--worker=jax", "--noflops"),
          "torch": ("--worker=torch", f"--threads={FLAGS.threads}"),
          "torch_compiled": ("--worker=torch", f"--threads={FLAGS.threads}", "--torch_compile")}
  runs.update({f"jax, {change} undone": ("--worker=jax", "--noflops",
                                         f"--undo={change}") for change in MEMORY_CHANGES})
  peak = {}
  for name in MODELS:
    for label, args in runs.items():
      _log(f"memory: {label} {name}")
      worker = Worker(label, *args)
      worker("setup", name=name)
      worker("window", name=name, steps=FLAGS.window_steps)
      peak[f"{label}|{name}"] = worker("maxrss")["maxrss_mb"]
      worker.close()
  return peak


def images_per_s(results, label, name):
  """Median images/s of a set of timed windows; "<model>_settings" windows use the model's batch."""
  model = name.removesuffix("_settings")
  batch = results["setup"][f"{label}|{model}"]["batch"]
  return _median_rate(batch * results["window_steps"], results["windows"][f"{label}|{name}"])


def write_figure(results, path):
  """Horizontal bars, a group per model: its label (model, JAX / PyTorch) cannot overlap."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6.4, 1.0 + 1.3 * len(MODELS)))
  compiled = f"torch_compiled|{MODELS[0]}" in results["windows"]
  height = 0.27 if compiled else 0.38
  bars_of = [(-height, "jax", "tab:blue"), (0.0, "torch", "tab:orange")]
  if compiled:
    bars_of.append((height, "torch_compiled", "tab:green"))
  else:
    bars_of = [(-height / 2, "jax", "tab:blue"), (height / 2, "torch", "tab:orange")]
  for offset, label, color in bars_of:
    values = [images_per_s(results, label, name) for name in MODELS]
    bars = ax.barh([i + offset for i in range(len(MODELS))], values, height, color=color,
                   label={"jax": "JAX (jit, 4 CPU devices)",
                          "torch": f"PyTorch {results['versions']['torch']} (eager, 2 threads)",
                          "torch_compiled": "PyTorch, torch.compile (inductor, 2 threads)"}
                   [label])
    ax.bar_label(bars, fmt="%.0f", padding=3)
  def ratio(name, twin):
    return images_per_s(results, "jax", name) / images_per_s(results, twin, name)

  ax.set_yticks(range(len(MODELS)), [
      f"{n.upper()}\nJAX / eager {ratio(n, 'torch'):.2f}x"
      + (f"\nJAX / compiled {ratio(n, 'torch_compiled'):.2f}x" if compiled else "")
      for n in MODELS])
  ax.invert_yaxis()  # the first model on top
  ax.set_xlabel("training images / s (128x128, batch 32)")
  ax.set_title(f"Train step throughput, 2-core CPU, {results['date'][:10]}")
  ax.legend(loc="best", fontsize=8)
  ax.margins(x=0.15)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv):
  del argv
  if FLAGS.worker:
    _serve()
    return
  if FLAGS.render_only:
    with open(FLAGS.results) as f:
      results = json.load(f)
  else:
    results = run_benchmark()
    with open(FLAGS.results, "w") as f:
      json.dump(results, f, indent=1)
  figure = os.path.join(ROOT, "docs", "figures", "benchmark_throughput.png")
  write_figure(results, figure)
  with open(FLAGS.output, "w") as f:
    f.write(benchmark_report.render(results, images_per_s))
  _log(f"wrote {FLAGS.output} and {figure} in {results['runtime_s']:.0f} s")


if __name__ == "__main__":
  app.run(main)
