"""Renders the raw results of bench/train_benchmark.py as docs/benchmarks.md.

Kept apart from the measuring so the text can be re-rendered from a saved run
(`--render_only`) without another 8 minutes on a shared machine. The prose
only states what the numbers of that run show.

The numbers and the words are kept apart too: `derive_numbers` computes every
number the report quotes, once, and each `_*_section` function only puts words
around them. A number can then be checked without reading prose, and the prose
edited without touching arithmetic.
"""

import dataclasses
import statistics

MODELS = ("ae", "vae", "unet_dae")
TARGET_RATIO = 1.2  # JAX / PyTorch training throughput; the aim stays AIM_RATIO
AIM_RATIO = 1.5
COMPILED_TARGET = 1.2  # JAX / the twin under torch.compile
MEMORY_TARGET = 1.0  # JAX peak RSS at most this many times the eager twin's
# A 2048x2048 fp32 GEMM reaches ~200 GFLOP/s (numpy; JAX's 195) on 2 cores of the
# machines of the earlier runs when nothing else runs, 300-360 (JAX; numpy ~200) on AMD Zen 5 ones;
# a run whose own GEMM measurement falls well below 200 shared the machine.
IDLE_GEMM_GFLOPS = 150
# Settings the prose discusses by name (labels of train_benchmark.py's settings workers).
ONE_THREAD = "torch, 1 thread"
ONEDNN = "jax, oneDNN"
TORCH_FUSED = "torch, upsampling as the JAX models compute it"
# The default JAX step in a worker of its own that holds the AE only, like the workers with
# a change undone: the baseline of *What each change bought*.
FRESH_DEFAULT = "jax, default (fresh worker, AE only)"

# The changes of the speed work, by the name train_benchmark.py's --undo takes: the run
# measures each against the way it replaced.
CHANGES = {
    "upsample_conv": "decoder's resize + 3x3 conv computed at the low resolution "
                     "(`kernels.upsample_conv`)",
    "one_output_conv": "one-channel output conv as a matrix product and a shifted sum "
                       "(`layers.OneOutputConv`)",
    "activation_before_depth_to_space": "bias and leaky ReLU of the decoder's upsampling "
                                        "convolutions before their depth-to-space "
                                        "(`kernels.upsample_conv`)",
    "conv2x2_gemm_grad": "kernel gradient of the decoder's 2x2 convolutions as one batched "
                         "GEMM (`kernels.conv2x2_valid`, custom VJP)",
    "jitted_init": "initial train state built by one jitted function "
                   "(`models.create_train_state`)",
    "lazy_imports": "training no longer imports SimpleITK (preprocessing imported where used)",
    "huge_pages": "malloc asks for huge pages for XLA's per-step buffers "
                  "(`host_memory.restart_with_huge_pages`)",
    "release_freed_heap": "the compiler's freed memory handed back to the OS before the first "
                          "step (`train.compile_ahead`)",
}
# Speed changes: the settings-phase label of the JAX worker with that change undone.
SPEED_CHANGES = {"upsample_conv": "jax, resize + conv upsampling (before)",
                 "one_output_conv": "jax, nn.Conv output layer (before)",
                 "conv2x2_gemm_grad": "jax, XLA's 2x2 kernel gradient (before)",
                 "activation_before_depth_to_space": "jax, bias + activation after the "
                                                     "depth-to-space (before)",
                 "huge_pages": "jax, malloc without huge pages (before)"}
MEMORY_CHANGES = ("jitted_init", "lazy_imports", "huge_pages", "release_freed_heap")
# The twin under the same malloc setting as the JAX training process.
TORCH_HUGE_PAGES = "torch, malloc with huge pages (as the JAX process)"


# -------------------------------------------------------------------------------- numbers


@dataclasses.dataclass(frozen=True)
class ModelNumbers:
  """What the report quotes about one model's train step, JAX against PyTorch."""

  params: int
  jax_rate: float  # images/s, median window
  torch_rate: float
  ratio: float  # JAX / PyTorch of the median rates
  compiled_rate: float | None  # the twin under torch.compile; None before it was measured
  compiled_ratio: float | None  # JAX / compiled twin of the median rates
  compiled_first_call: float | None  # s: the compiled twin's first step (compilation)
  best_ratio: float  # fastest PyTorch window / fastest JAX window
  jax_step: float  # s/step, median window
  torch_step: float
  first_call: float  # s: trace + compile + run
  warm_step: float  # s
  compiled_versions: int
  gflop: float  # XLA's count for one whole-batch step
  achieved_gflops: float
  fraction_of_peak: float  # of the GEMM rate measured in the same run
  forward: float  # s, forward loss alone
  forward_backward: float  # s, gradients without the optimiser
  forward_backward_share: float  # of the median step, at most 1
  backward_per_forward: float  # time of the backward pass over the forward's
  gradient_vs_forward_rate: float  # FLOP rate of the backward over the forward's (2x the FLOPs)


@dataclasses.dataclass(frozen=True)
class SettingsNumbers:
  """The AE settings phase: each setting's rate against its framework's re-timed default."""

  repeats: int | str  # "?" for results saved before the count was recorded
  jax_default: float  # images/s
  torch_default: float
  rates: dict[str, float]  # setting label -> images/s
  vs_default: dict[str, float]  # setting label -> rate / its framework's default
  one_thread_vs_jax: float | None  # PyTorch with one thread over JAX's default, if tried
  jax_vs_one_thread: float | None


@dataclasses.dataclass(frozen=True)
class ReportNumbers:
  """Every number the report quotes, derived once from one run's raw results."""

  runtime_min: float
  repeats: int
  window_steps: int
  gemm: dict[str, float]  # GFLOP/s per framework
  gemm_peak: float  # the best of them
  quiet: bool  # the machine was otherwise idle (judged by the GEMM peak)
  models: dict[str, ModelNumbers]  # in MODELS order
  settings: SettingsNumbers | None  # None when the settings phase did not run
  jax_ae_windows: tuple[float, float]  # fastest, slowest headline AE window, s
  torch_ae_windows: tuple[float, float]
  pipeline_rate: float  # images/s
  pipeline_vs_training: float  # over the fastest training rate
  prepare_seconds: float
  evaluation: dict  # as measured: volumes, volumes_per_s, slices_per_s, ...
  memory_mb: dict[str, float]  # peak RSS, "<worker label>|<model>" -> MB
  op_profile: dict[str, dict[str, float]]  # model -> kind of operation -> thread s per step
  predict_markdown: str | None  # bench/predict_benchmark.py's table, if it ran


def _gemm_peak(results):
  return max(v for k, v in results["gemm"].items() if k != "maxrss_mb")


def _step_seconds(results, label, name):
  return statistics.median(results["windows"][f"{label}|{name}"]) / results["window_steps"]


def _best_ratio(results, name):
  return min(results["windows"][f"torch|{name}"]) / min(results["windows"][f"jax|{name}"])


def _window_range(results, key):
  return min(results["windows"][key]), max(results["windows"][key])


def _model_numbers(results, images_per_s, name, peak) -> ModelNumbers:
  """One model's rates, step times, FLOP rate and forward/backward split."""
  setup = results["setup"][f"jax|{name}"]
  profile = results["profile"][name]
  jax_rate = images_per_s(results, "jax", name)
  torch_rate = images_per_s(results, "torch", name)
  step = _step_seconds(results, "jax", name)
  compiled = f"torch_compiled|{name}" in results["windows"]
  compiled_rate = images_per_s(results, "torch_compiled", name) if compiled else None
  gflop = setup["flops"] / 1e9
  backward = (profile["forward_backward"] - profile["forward"]) / profile["forward"]
  return ModelNumbers(
      params=setup["params"], jax_rate=jax_rate, torch_rate=torch_rate,
      ratio=jax_rate / torch_rate, compiled_rate=compiled_rate,
      compiled_ratio=jax_rate / compiled_rate if compiled else None,
      compiled_first_call=(results["setup"][f"torch_compiled|{name}"]["first_call"]
                           if compiled else None),
      best_ratio=_best_ratio(results, name), jax_step=step,
      torch_step=_step_seconds(results, "torch", name), first_call=setup["first_call"],
      warm_step=setup["warm_step"], compiled_versions=results["cache_sizes"][f"jax|{name}"],
      gflop=gflop, achieved_gflops=gflop / step, fraction_of_peak=gflop / step / peak,
      forward=profile["forward"], forward_backward=profile["forward_backward"],
      forward_backward_share=min(profile["forward_backward"] / step, 1),
      backward_per_forward=backward, gradient_vs_forward_rate=2 / backward)


def _settings_numbers(results, images_per_s) -> SettingsNumbers | None:
  """The settings phase's rates, each against the default of its own framework."""
  labels = [k.split("|")[0] for k in results["windows"] if k.endswith("|ae_settings")]
  labels = [k for k in labels if k not in ("jax", "torch")]
  if not labels:
    return None
  jax_default = images_per_s(results, "jax", "ae_settings")
  torch_default = images_per_s(results, "torch", "ae_settings")
  rates = {label: images_per_s(results, label, "ae_settings") for label in labels}
  vs_default = {label: rate / (jax_default if label.startswith("jax") else torch_default)
                for label, rate in rates.items()}
  one = rates.get(ONE_THREAD)
  return SettingsNumbers(
      repeats=results.get("ablation_repeats", "?"), jax_default=jax_default,
      torch_default=torch_default, rates=rates, vs_default=vs_default,
      one_thread_vs_jax=None if one is None else one / jax_default,
      jax_vs_one_thread=None if one is None else jax_default / one)


def derive_numbers(results, images_per_s) -> ReportNumbers:
  """Every number the report quotes, from train_benchmark.py's raw results.

  `images_per_s(results, label, name)` is train_benchmark.py's median rate of a
  set of timed windows; it is passed in so the rate has one definition.
  """
  peak = _gemm_peak(results)
  # Results made before a model joined the benchmark render without it.
  models = {n: _model_numbers(results, images_per_s, n, peak) for n in MODELS
            if f"jax|{n}" in results["windows"]}
  pipeline = results["pipeline"]
  return ReportNumbers(
      runtime_min=results["runtime_s"] / 60, repeats=results["repeats"],
      window_steps=results["window_steps"], gemm=results["gemm"], gemm_peak=peak,
      quiet=peak >= IDLE_GEMM_GFLOPS, models=models,
      settings=_settings_numbers(results, images_per_s),
      jax_ae_windows=_window_range(results, "jax|ae"),
      torch_ae_windows=_window_range(results, "torch|ae"),
      pipeline_rate=pipeline["images_per_s"],
      pipeline_vs_training=pipeline["images_per_s"] / max(m.jax_rate for m in models.values()),
      prepare_seconds=pipeline["prepare_seconds"], evaluation=results["evaluation"],
      memory_mb=results["memory"], op_profile=results.get("op_profile", {}),
      predict_markdown=(results.get("predict") or {}).get("markdown"))


# -------------------------------------------------------------------------------- words


def render(results, images_per_s) -> str:
  """docs/benchmarks.md for one run: its sections, in order, joined."""
  n = derive_numbers(results, images_per_s)
  sections = [
      _title_section(results, n), _conditions_section(results, n),
      _throughput_section(n, results["versions"]),
      _compilation_section(n), _flop_rate_section(n), _time_split_section(n),
      _op_profile_section(n), _settings_section(n.settings), _changes_section(n),
      _bounds_section(n), _pipeline_section(n), _evaluation_section(n.evaluation),
      _memory_section(n), _predict_section(n),
  ]
  return "\n".join(line for section in sections for line in section) + "\n"


def _table(columns, rows):
  """A Markdown table: the first column names the row (left), the rest are numbers (right)."""
  return [_table_row(columns), "|---|" + "---:|" * (len(columns) - 1),
          *(_table_row(row) for row in rows)]


def _table_row(cells):
  return "| " + " | ".join(cells) + " |"


def _title_section(results, n):
  """What is compared, how to regenerate it, and which software measured it."""
  v = results["versions"]
  return [
      "# Benchmarks",
      "",
      "Training, input-pipeline and evaluation throughput of the default AE and VAE",
      "(`configs/ae.py`, `configs/vae.py`: 128x128, channels (16, 32, 64, 128), dense latent",
      "128, global batch 32) and of the denoising U-Net (`configs/unet_dae.py`: 128x128,",
      "width 16, 4 levels, batch 32), JAX against a PyTorch twin. Regenerate with:",
      "",
      "```",
      "pip install -r bench/requirements.txt   # torch==2.13.0, CPU wheel",
      f"python bench/train_benchmark.py --repeats={n.repeats} --window_steps={n.window_steps}"
      + (" --predict_workdir=runs/vae" if n.predict_markdown is not None else ""),
      "```",
      *(["", "(`runs/vae`: a trained default VAE, `python launch.py --config=configs/vae.py`;",
         "its weights do not change the timings.)"] if n.predict_markdown is not None else []),
      "",
      f"Measured {results['date']}, in {n.runtime_min:.1f} min. Machine: 2 CPU cores,",
      f"no GPU, Python {results['python']}; jax {v['jax']}, flax {v['flax']}, optax {v['optax']},",
      f"numpy {v['numpy']}, torch {v['torch']}."
      + (f" CPU: {v['cpu']}." if "cpu" in v else ""),
      "",
  ]


def _conditions_section(results, n):
  """How loaded the machine was and how the timing shared it: every number depends on it."""
  return [
      *_machine_paragraph(n),
      "",
      *(f"- `{results[key]}`" for key in ("load_before", "load_during", "load_after")),
      "",
      "JAX and PyTorch timed windows were interleaved (JAX, PyTorch, JAX, PyTorch, ...) in",
      "one run so both saw the same conditions, and every number is a median of "
      f"{n.repeats} windows of {n.window_steps} steps.",
      "Each framework trains each model in a process of its own, as a training process",
      "does. Runs until 2026-12-01 07:37 UTC set up all three models in one process per",
      "framework, which favoured the twin's AE and VAE: after the U-Net's setup, glibc's",
      "heap spared its AE step ~90,000 page faults (0.36 instead of 0.49 s/step, 16,000",
      "instead of 107,000 faults; JAX's step, on huge pages, was unaffected).",
      "",
      "![training throughput](figures/benchmark_throughput.png)",
      "",
  ]


def _machine_paragraph(n):
  if n.quiet:
    return [f"**The machine was otherwise idle**: the GEMM measured in the run reached "
            f"{n.gemm_peak:.0f} GFLOP/s,",
            "the idle rate of these 2 cores. `uptime` before, during (after the timed windows)",
            "and after (the load averages decay slowly and still count jobs that ended just",
            "before):"]
  return ["**The machine was shared**: other jobs ran on the same 2 cores during the run",
          f"(its GEMM reached only {n.gemm_peak:.0f} GFLOP/s of the ~200 idle). "
          "`uptime` before, during",
          "(after the timed windows) and after:"]


def _how_the_steps_run(versions) -> list[str]:
  """What the two timed steps are, so the ratio compares like with like."""
  devices = versions.get("device_count", 4)  # results from before it was recorded: 4
  kernels = ("XLA's oneDNN kernels (`--xla_cpu_use_onednn=true`)" if versions.get("onednn")
             else "XLA's own kernels")
  return [
    "- JAX: `brainseg_jax.train.jit_train_step` exactly as training uses it: `jax.jit` with",
    f"  the state replicated and the batch sharded (`NamedSharding`) over {devices} XLA CPU",
    "  devices (`parallel.split_host_into_devices()`, training's default: two per core),",
    f"  {kernels}, state donated, compiled ahead",
    "  (`train.compile_ahead`), in a process whose malloc asks for huge pages as launch.py's",
    "  does (`host_memory.restart_with_huge_pages`).",
    "- PyTorch: `bench/torch_twin.py`, eager mode, `torch.set_num_threads(2)` (one thread per",
    "  core), NCHW. Same layers and the same numerics (a test copies the Flax parameters",
    "  into the twin and gets the same reconstruction to 1e-5), same parameter count (asserted",
    "  by the benchmark), same loss, same optimiser (global-norm clipping to 1.0, then Adam",
    "  under the warm-up + cosine schedule; multi-tensor `foreach` Adam and clipping).",
    "- PyTorch compiled: the same twin with its loss under `torch.compile` (inductor, the",
    "  default backend: forward and, through AOTAutograd, backward as generated C++ kernels;",
    "  a test checks it follows the eager twin's losses and parameters step by step).",
    "- Both step on one fixed, already-placed batch of 32 random images: this is the train",
    "  step alone; the input pipeline is measured below.",
    "- The last column divides the fastest PyTorch window by the fastest JAX window: an",
    "  estimate of the ratio when neither is disturbed by the other users' load (see",
    "  *What bounds it*).",
  ]


def _throughput_section(n, versions):
  """The headline: JAX against PyTorch training images/s, and whether the target was met."""
  compiled = any(m.compiled_rate is not None for m in n.models.values())
  rows = [(name.upper(), f"{m.params:,}", f"{m.jax_rate:.1f}", f"{m.torch_rate:.1f}",
           f"**{m.ratio:.2f}x**",
           *((f"{m.compiled_rate:.1f}", f"**{m.compiled_ratio:.2f}x**") if compiled else ()),
           f"{m.jax_step:.3f}", f"{m.torch_step:.3f}",
           f"{m.best_ratio:.2f}x") for name, m in n.models.items()]
  columns = ("model", "parameters (both)", "JAX images/s", "PyTorch images/s", "JAX / PyTorch",
             *(("PyTorch compiled images/s", "JAX / compiled") if compiled else ()),
             "JAX s/step", "PyTorch s/step", "JAX / PyTorch, fastest windows")
  return [
      "## Training throughput",
      "",
      *_table(columns, rows),
      "",
      *_how_the_steps_run(versions),
      "",
      *_target_verdict(n),
      "",
      *_compiled_verdict(n),
      "",
  ]


def _compiled_verdict(n):
  """The targets against both twins: JAX >= AIM_RATIO x eager and >= COMPILED_TARGET x compiled."""
  if any(m.compiled_rate is None for m in n.models.values()):
    return []
  eager = [name.upper() for name, m in n.models.items() if m.ratio < AIM_RATIO]
  compiled = [name.upper() for name, m in n.models.items() if m.compiled_ratio < COMPILED_TARGET]
  slower = [name.upper() for name, m in n.models.items() if m.compiled_ratio < 1]
  lines = [f"Targets against both twins: JAX >= {AIM_RATIO}x the eager twin: "
           + (f"**not reached** for {', '.join(eager)}" if eager else "**reached** for every model")
           + f"; JAX >= {COMPILED_TARGET}x the compiled twin: "
           + (f"**not reached** for {', '.join(compiled)}" if compiled
              else "**reached** for every model") + "."]
  if slower:
    lines.append(f"The compiled twin trains faster than JAX for {', '.join(slower)}.")
  first = ", ".join(f"{name.upper()} {m.compiled_first_call:.0f} s"
                    for name, m in n.models.items())
  lines.append(f"torch.compile's first step (tracing and C++ compilation): {first}.")
  return lines


def _target_verdict(n):
  """Whether the JAX / PyTorch target was reached, and how far the load explains it."""
  below = [name.upper() for name, m in n.models.items() if m.ratio < TARGET_RATIO]
  if below:
    lines = [f"The target was >= {TARGET_RATIO}x (the aim {AIM_RATIO}x). It is **not reached** "
             f"for {', '.join(below)} in this run; see *What bounds it*."]
  else:
    lines = [f"The target of >= {TARGET_RATIO}x is reached for every model in this run "
             f"(the aim stays {AIM_RATIO}x)."]
  best_below = [name.upper() for name, m in n.models.items() if m.best_ratio < TARGET_RATIO]
  if best_below and not n.quiet:
    lines.append(f"On the fastest windows it is not reached for {', '.join(best_below)}: "
                 "the medians' advantage comes largely from how the load slows PyTorch.")
  slower = [name.upper() for name, m in n.models.items() if m.ratio < 1]
  if slower and n.quiet:
    lines.append(f"On the idle machine PyTorch's eager step is the faster one for "
                 f"{', '.join(slower)}.")
  return lines


def _compilation_section(n):
  """JAX's one-off compile cost, and evidence that the timed step never recompiled."""
  rows = [(name.upper(), f"{m.first_call:.2f}", f"{m.warm_step:.3f}", str(m.compiled_versions))
          for name, m in n.models.items()]
  columns = ("model", "first call (trace + compile + run), s", "warm step, s",
             "compiled versions after all windows")
  return [
      "## Compilation (JAX)",
      "",
      *_table(columns, rows),
      "",
      "The step compiles once: the jitted step's `_cache_size()` is 1 after every timed window",
      "of every JAX worker, and `tests/test_train.py` checks with",
      "`jax.log_compiles` that steps after the first log no compilation. PyTorch eager has no",
      "compile step (its first call includes allocator and thread-pool warm-up only).",
      "",
  ]


def _flop_rate_section(n):
  """How close the JAX step comes to the machine's matmul rate in the same run."""
  rows = [(name.upper(), f"{m.gflop:.1f}", f"{m.jax_step:.3f}", f"{m.achieved_gflops:.1f}",
           f"{n.gemm_peak:.0f}", f"{m.fraction_of_peak:.0%}") for name, m in n.models.items()]
  columns = ("model", "GFLOP per step", "step, s", "achieved GFLOP/s", "GEMM peak, GFLOP/s",
             "fraction of peak")
  return [
      "## Achieved FLOP rate (JAX)",
      "",
      "Work per step from XLA's cost analysis of the whole-batch step (`jax.jit(train_step)",
      ".lower(state, images).compile().cost_analysis()['flops']`), divided by the median step",
      "time; the peak is the best 2048x2048 float32 matmul measured in the same run",
      f"(JAX {n.gemm['jax']:.0f}, numpy {n.gemm['numpy']:.0f}, "
      f"PyTorch {n.gemm['torch']:.0f} GFLOP/s).",
      "",
      *_table(columns, rows),
      "",
      *_gemm_note(n.quiet),
      "",
  ]


def _gemm_note(quiet):
  """Which peak the fraction is of: the idle machine's, or what a shared one delivered."""
  if quiet:
    return ["The GEMM rate measured here is that of 2 idle cores (~200 GFLOP/s on the machines",
            "of earlier runs, 300-360 with JAX's GEMM on AMD Zen 5 ones)."]
  return ["The GEMM peak measured here is far below the ~200 GFLOP/s 2 cores give when",
          "idle: the matmul ran under the same background load. The fraction is therefore of",
          "what the machine delivered during the run, not of its idle peak."]


def _time_split_section(n):
  """Forward, backward and optimiser shares of the JAX step."""
  rows = [(name.upper(), f"{m.forward:.3f}", f"{m.forward_backward:.3f}", f"{m.jax_step:.3f}",
           f"{m.backward_per_forward:.1f}x") for name, m in n.models.items()]
  columns = ("model", "forward, s", "forward + backward, s", "full step, s",
             "backward / forward")
  return [
      "## Where the JAX step's time goes",
      "",
      "Forward loss alone and forward + backward (gradients, no optimiser), jitted with the",
      "same shardings, median of repeated calls, against the full step:",
      "",
      *_table(columns, rows),
      "",
  ]


def _settings_section(settings):
  """The AE settings tried, each against its framework's default; nothing if none ran."""
  if settings is None:
    return []
  rows = [("jax, default (as train.py)", f"{settings.jax_default:.1f}",
           "1.00x"),
          ("torch, 2 threads, NCHW (default above)", f"{settings.torch_default:.1f}", "1.00x"),
          *((label, f"{rate:.1f}", f"{settings.vs_default[label]:.2f}x")
            for label, rate in settings.rates.items())]
  return [
      "## Settings tried (AE)",
      "",
      "Measured after the headline rounds, in the same run: each setting in its own worker,",
      "interleaved with the two defaults, which are re-timed in this phase as the baseline",
      f"(median of {settings.repeats} windows each).",
      "",
      *_table(("setting", "images/s", "vs the default of its framework"), rows),
      "",
  ]


def _bounds_section(n):
  """What limits the ratio, from this run's numbers, and what was done about it."""
  return [
      "## What bounds it",
      "",
      *_convolution_bullet(n),
      *_kernels_bullet(n.models["ae"]),
      *_load_bullet(n),
      *_one_thread_note(n.settings),
      "",
      *_steps_taken(n.settings),
  ]


def _convolution_bullet(n):
  """Where the AE step's time is: the convolutions, mostly their backward, by the profile."""
  ae = n.models["ae"]
  lines = [
      "- **Convolutions, mostly their backward pass.** Forward + backward take "
      f"{ae.forward_backward_share:.0%} of the AE",
      f"  step, and the backward costs {ae.backward_per_forward:.1f}x the forward where its "
      "FLOPs are 2x: XLA:CPU's",
      f"  gradient convolutions run at {ae.gradient_vs_forward_rate:.0%} of the forward's FLOP "
      "rate.",
  ]
  profile = n.op_profile.get("ae")
  if profile:
    total = sum(profile.values())
    share = {kind: seconds / total for kind, seconds in profile.items()}
    parts = ", ".join(f"{kind} {value:.0%}" for kind, value in
                      sorted(share.items(), key=lambda kv: -kv[1]))
    lines += [f"  By operation (the profile above), the AE step's thread time is: {parts}.",
              "  The layout copies are XLA:CPU's: it computes a kernel gradient as a convolution",
              "  over the batch and first transposes activations and output gradients for it."]
  return lines


def _kernels_bullet(ae):
  """Why jit's advantages over eager matter little in a convolution-bound step."""
  return [
      "- **Both frameworks run the same convolution FLOPs through optimised CPU conv",
      "  kernels** (XLA:CPU's and PyTorch's own). What jit adds over eager (fusion of the",
      "  elementwise ops and the optimiser, no Python dispatch) is a small share of a",
      "  conv-bound step, so the ratio mostly reflects the convolution kernels and how each",
      "  runtime spreads them over the 2 cores, not the framework overhead.",
      f"  The AE step reaches {ae.fraction_of_peak:.0%} of the GEMM rate the machine delivered "
      "in the",
      "  same run.",
  ]


def _load_bullet(n):
  """How much the other users' load moved the windows, and so the ratio."""
  jax_fast, jax_slow = n.jax_ae_windows
  torch_fast, torch_slow = n.torch_ae_windows
  window = (f"the headline JAX AE windows ({n.window_steps} steps each) ranged "
            f"{jax_fast:.2f}-{jax_slow:.2f} s for the same work, the PyTorch AE windows "
            f"{torch_fast:.2f}-{torch_slow:.2f} s")
  if n.quiet:
    return [
        "- **Not the load.** This run had the machine to itself; " + window + ".",
        "  Earlier runs on a loaded machine gave medians of 1.4-1.9x in JAX's favour: the",
        "  2-thread PyTorch step loses most when another process takes one of its cores,",
        "  while JAX's device threads degrade evenly. The undisturbed speeds are the",
        "  ones above.",
    ]
  return [
      "- **Load.** Extra XLA devices only help when there are cores free to run them, and",
      "  multi-threaded workers lose time at thread barriers whenever one of their threads",
      "  is descheduled by another user's process. Differences between settings should be",
      "  read against the spread of the windows: " + window + ". The 2-thread PyTorch step",
      "  is the one the load hurts most. The median ratio therefore includes the",
      "  robustness of each runtime to a shared machine; the fastest-window ratio "
      f"({n.models['ae'].best_ratio:.2f}x AE,",
      f"  {n.models['vae'].best_ratio:.2f}x VAE) better estimates the undisturbed speeds.",
  ]


def _one_thread_note(settings):
  """PyTorch with one thread, if tried: whether 2 threads on 2 cores oversubscribe."""
  if settings is None or ONE_THREAD not in settings.rates:
    return []
  return [
      f"  In the settings phase PyTorch with **one** thread ran {settings.rates[ONE_THREAD]:.1f} "
      f"images/s, {settings.vs_default[ONE_THREAD]:.2f}x its 2-thread",
      f"  default and {settings.one_thread_vs_jax:.2f}x JAX's (JAX / PyTorch-1-thread = "
      f"{settings.jax_vs_one_thread:.2f}x) in that phase. The headline",
      "  ratio keeps the usual setting of one thread per core.",
  ]


def _steps_taken(settings):
  """What was tried to raise the ratio (measured in the tables above) and what was not."""
  tried = settings.rates if settings is not None else {}
  return [
      "Steps taken to raise the ratio (AE unless said):",
      "",
      "1. **Upsampling computed at the low resolution** (kept): the decoder's nearest resize +",
      "   3x3 conv is one 2x2 convolution of the padded input with 4x the outputs and a",
      "   depth-to-space (`kernels.upsample_conv`): 16 instead of 36 multiply-adds per input",
      "   pixel and channel pair, the upsampled input never built, and wider convolutions that",
      "   suit XLA:CPU's kernels. Same parameters; tests against resize + conv (values,",
      "   gradients). The U-Net's up-convolutions use it too (with the standardised kernel).",
      "2. **One-channel output conv as a matrix product and a shifted sum** (kept; only for",
      "   one output channel, where XLA's convolution idles; wider outputs ran slower).",
      "3. Kernel gradient of the new 2x2 convolution as one im2col GEMM (custom VJP): 1.4-2.8x",
      "   faster per layer alone, but the AE step ran slower with it (interleaved, 4 devices:",
      "   0.446 vs 0.415 s), so XLA's gradient stays. Per 3x3 layer shape",
      "   ([conv_backward.md](conv_backward.md)): XLA's kernel gradient beats or ties im2col +",
      "   GEMM and nine slice GEMMs everywhere; the input gradient written as a forward",
      "   convolution is up to 2x faster on some 128-px layers, but as a custom VJP it did not",
      "   speed up the AE step (651 vs 684 ms, one device, before the rewrite above).",
      "4. bfloat16 ([conv_backward.md](conv_backward.md)): XLA:CPU does not turn the CPU's",
      "   AVX512-BF16 into speed (the bfloat16 GEMM is slower than float32's; forward +",
      "   gradients slower for every layer but one), so there is no mixed-precision switch.",
      "5. Device count (1, 2, 4, 8; the default two per core), buffer donation, and the twin",
      "   channels-last or with one thread: the settings table."
      + ("" if ONEDNN not in tried else " XLA:CPU's oneDNN and"
         " XNNPACK options too."),
      "6. Memory: the jitted initial state, no SimpleITK in a training process, and the",
      "   compiler's freed heap handed back to the OS before the first step (what each saved:",
      "   *What each change bought*); training no longer imports PyTorch through",
      "   tensorboardX when torch is installed (230 MB).",
      *_host_memory_item(settings),
      "7. Already in the model before: nearest resize + conv instead of `ConvTranspose`",
      "   (~3x faster backward on XLA:CPU), and `jit` + `NamedSharding` instead of `pmap` (2x).",
      "",
      "Not tried in the time available: a fused group norm for the U-Net.",
      "",
  ]


def _host_memory_item(settings):
  """The malloc finding: XLA's per-step buffers were faulted in page by page."""
  lines = [
      "8. **Malloc with huge pages** (kept): XLA:CPU allocates each step's temporaries as one",
      "   buffer per device (58 MB for the AE, 322 MB for the U-Net) and frees it after the",
      "   step; glibc mmap'ed it fresh every step and the kernel faulted it in 4 KiB at a time:",
      "   0.11 s of system time per AE step and 0.7 s per U-Net step (of 1.6 s) before. With",
      "   `glibc.malloc.hugetlb=1` (launch.py restarts itself with it) they fault in 2 MiB",
      "   at a time.",
  ]
  if settings is not None and TORCH_HUGE_PAGES in settings.rates:
    lines += [
        f"   The same setting made the twin {settings.vs_default[TORCH_HUGE_PAGES]:.2f}x its "
        "default (settings table), so",
        "   the headline runs the twin without it."]
  lines += [
      "9. **Kernel gradients of the decoder's 2x2 convolutions as GEMMs** (kept since",
      "   2026-12-01): the largest operations of the AE step once the page faults were gone.",
      "   XLA:CPU computes each as a convolution over the batch after transposing both",
      "   operands (35-75 GFLOP/s in the step's profile on an AMD Zen 5 machine whose float32",
      "   GEMM reaches 300-360 GFLOP/s); `kernels.conv2x2_valid` has a custom VJP whose kernel",
      "   gradient is one `dot_general` of the four shifted views of the input with the",
      "   output gradient, batched over the taps: 1.4-2.4x faster per layer alone, one device;",
      "   the AE / VAE step: [change_ab.md](change_ab.md).",
      "   On the machine of the earlier runs (GEMM 195-210 GFLOP/s) it measured within",
      "   noise (0.399 vs 0.413 s per step). The optimiser state sharded over the devices",
      "   instead of replicated: no faster, ~30 MB less.",
      "10. **Bias and activation before the depth-to-space** (kept since 2026-12-01): the",
      "   decoder's upsampling convolution adds its bias and applies the leaky ReLU to the",
      "   2x2 convolution's own output (bias tiled over the four parities), then rearranges;",
      "   the loops that did this on the rearranged 128-px image, and their gradients, read",
      "   strided memory (the profile's largest elementwise fusions); the AE / VAE step:",
      "   [change_ab.md](change_ab.md). Only without normalisation (the AE / VAE",
      "   default); the U-Net normalises first and keeps the old order.",
  ]
  return lines


def _pipeline_section(n):
  """Whether the input pipeline keeps up with the fastest training step."""
  return [
      "## Input pipeline",
      "",
      "`input_pipeline.train_batches` (TFDS array_record + grain, 2 read threads, batch 32,",
      f"synthetic_brain flair_128): **{n.pipeline_rate:.0f} images/s**, "
      f"{n.pipeline_vs_training:.0f}x the fastest training step above, so the",
      "pipeline does not bound training (opening the already-built dataset took "
      f"{n.prepare_seconds:.1f} s; building it the first time takes ~45 s).",
      "",
  ]


def _evaluation_section(ev):
  """Throughput of scoring test volumes, the other half of what a user waits for."""
  return [
      "## Evaluation",
      "",
      f"`scoring.VolumeScorer` (VAE, as in training) over the {ev['volumes']} test volumes of",
      f"synthetic_brain flair_128 (jitted reconstruction + anomaly map, host transfer): "
      f"**{ev['volumes_per_s']:.2f} volumes/s** ({ev['slices_per_s']:.0f} slices/s); the first",
      f"volume, with compilation, took {ev['first_call']:.2f} s; compiled versions: "
      f"{ev['compiled_versions']}. Metrics and post-processing are not included here;",
      "`bench/scoring_benchmark.py` times the whole per-volume path.",
      "",
  ]


def _memory_section(n):
  """Peak RSS of a process training one model, each framework, against the target."""
  rows = []
  for name in n.models:
    jax_mb, torch_mb = n.memory_mb.get(f"jax|{name}"), n.memory_mb.get(f"torch|{name}")
    if jax_mb is None or torch_mb is None:
      continue
    ratio = jax_mb / torch_mb
    compiled_mb = n.memory_mb.get(f"torch_compiled|{name}")
    rows.append((name.upper(), f"{jax_mb:.0f}", f"{torch_mb:.0f}", f"**{ratio:.2f}x**",
                 "yes" if ratio <= MEMORY_TARGET else "no",
                 *((f"{compiled_mb:.0f}",) if compiled_mb is not None else ())))
  compiled = any(f"torch_compiled|{name}" in n.memory_mb for name in n.models)
  return [
      "## Peak memory",
      "",
      "`ru_maxrss` of a fresh worker process per model and framework that sets the model up",
      "as training does (JAX: jitted init, state placed on the devices, the step compiled ahead",
      "and the freed heap released, malloc with huge pages; no",
      f"FLOP count) and runs a timed window of {n.window_steps} steps; the framework runtime",
      "and its imports included.",
      "",
      *_table(("model", "JAX peak RSS, MB", "PyTorch peak RSS, MB", "JAX / PyTorch",
               f"within {MEMORY_TARGET}x",
               *(("PyTorch compiled peak RSS, MB",) if compiled else ())), rows),
      "",
      *_memory_bound(rows),
  ]


def _memory_bound(rows) -> list[str]:
  """The target's verdict and, where it is missed, what the JAX process holds beyond the twin."""
  missed = [row[0] for row in rows if row[4] == "no"]
  if not rows:
    return []
  if not missed:
    return [f"The target, at most {MEMORY_TARGET}x the eager twin's peak: **reached** for every "
            "model.", ""]
  return [
      f"The target, at most {MEMORY_TARGET}x the eager twin's peak: **not reached** for "
      f"{', '.join(missed)}. What bounds it: the JAX process's imports (JAX, Flax, Optax and",
      "their dependencies) and, per XLA device, a replica of the state and the step's",
      "temporaries; `python bench/train_memory.py` measures each phase of a training process",
      "([speed.md](speed.md#peak-memory)).",
      "",
  ]


def _op_profile_section(n):
  """Thread time of the JAX step by kind of operation, from a jax.profiler trace."""
  if not n.op_profile:
    return []
  models = [name for name in n.models if name in n.op_profile]
  kinds = sorted({k for name in models for k in n.op_profile[name]},
                 key=lambda k: -sum(n.op_profile[name].get(k, 0) for name in models))
  totals = {name: sum(n.op_profile[name].values()) for name in models}
  rows = [(kind, *(f"{n.op_profile[name].get(kind, 0):.3f} "
                   f"({n.op_profile[name].get(kind, 0) / totals[name]:.0%})" for name in models))
          for kind in kinds]
  rows.append(("total (all device threads)", *(f"{totals[name]:.3f}" for name in models)))
  return [
      "## Where the JAX step's time goes, by operation",
      "",
      "A `jax.profiler` trace of 3 steps: the durations of the compiled step's own",
      "operations, summed over the device threads (which share the cores, so the total can",
      "exceed the wall time), grouped by what each operation is in the optimised HLO;",
      "seconds per step (share).",
      "",
      *_table(("kind of operation", *(name.upper() for name in models)), rows),
      "",
  ]


def _changes_section(n):
  """What each change of the speed work bought, measured in this run against the old way."""
  rows = []
  settings = n.settings
  for change, label in SPEED_CHANGES.items():
    if settings is None or label not in settings.rates:
      continue
    before = settings.rates[label]
    after = settings.rates.get(FRESH_DEFAULT, settings.jax_default)
    rows.append((CHANGES[change], f"AE training: {before:.1f} -> {after:.1f} "
                 f"images/s (**{after / before:.2f}x**)"))
  for change in MEMORY_CHANGES:
    undone = {name: n.memory_mb[f"jax, {change} undone|{name}"] for name in n.models
              if f"jax, {change} undone|{name}" in n.memory_mb}
    if undone:
      rows.append((CHANGES[change], "peak RSS " + ", ".join(
          f"{name.upper()} {before:.0f} -> {n.memory_mb[f'jax|{name}']:.0f} MB"
          for name, before in undone.items())))
  if not rows:
    return []
  lines = ["## What each change bought", "",
           "Each measured in this run against a worker with the change undone "
           "(`train_benchmark.py --undo=...`): speed in the settings phase (AE, interleaved, "
           f"against the \"{FRESH_DEFAULT}\" row, a worker set up the same way), memory as "
           "in *Peak memory*.", "",
           *_table(("change", "effect"), rows), "",
           "The settings phase has ~20 workers alive and 3 windows per setting: its rows "
           "move by 20-30 % between runs, more than a change worth a few per cent. Such "
           "changes are measured alone, with and without, 10 alternating rounds, by "
           "`bench/change_ab.py` ([change_ab.md](change_ab.md)).", ""]
  if settings is not None and TORCH_FUSED in settings.rates:
    fused = settings.rates[TORCH_FUSED]
    jax_rate = settings.rates.get(FRESH_DEFAULT, settings.jax_default)
    lines += [f"The twin with the same upsampling rewrite ran {fused:.1f} images/s "
              f"({settings.vs_default[TORCH_FUSED]:.2f}x its plain default): like for like, "
              f"JAX / PyTorch = **{jax_rate / fused:.2f}x** for the AE in that phase.", ""]
  return lines


def _predict_section(n):
  """A raw scan to its report, stage by stage (bench/predict_benchmark.py), if it ran."""
  if n.predict_markdown is None:
    return ["## predict, stage by stage", "",
            "Not measured in this run (`--predict_workdir` unset); see "
            "[benchmarks_predict.md](benchmarks_predict.md).", ""]
  return [
      "## predict, stage by stage",
      "",
      "`bench/predict_benchmark.py` run by this benchmark (`--predict_workdir`): a fresh",
      "predict process, two 1 mm TCGA FLAIR scans of ../shared/data (240x240x155), the",
      "second reusing the compiled scorer.",
      "",
      n.predict_markdown.rstrip(),
      "",
  ]
