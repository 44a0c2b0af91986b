"""docs/benchmarks.md quotes the numbers of the run it was rendered from.

The report is re-rendered from saved results (`--render_only`), so a wrong
ratio or a sentence for the wrong machine state would be published without
anyone re-measuring. These tests render a small run whose numbers are easy to
work out by hand (batch 32, 2 steps a window: a 1 s window is 64 images/s).
"""

import copy
import statistics

from bench import benchmark_report


def images_per_s(results, label, name):
  """train_benchmark.images_per_s, restated: importing that script defines its absl flags."""
  batch = results["setup"][f"{label}|{name.split('_')[0]}"]["batch"]
  return batch * results["window_steps"] / statistics.median(results["windows"][f"{label}|{name}"])


def _idle_run():
  """AE: JAX 64 images/s, PyTorch 32 (2.00x). VAE: JAX 64, PyTorch 58.2 (1.10x). GEMM 200."""
  setup = {f"torch|{name}": dict(params=params, batch=32)
           for name, params in (("ae", 2447233), ("vae", 3495937))}
  setup["jax|ae"] = dict(params=2447233, batch=32, first_call=3.5, warm_step=0.6, flops=64e9)
  setup["jax|vae"] = dict(params=3495937, batch=32, first_call=3.4, warm_step=0.6, flops=64e9)
  return dict(
      date="2026-01-01 00:00 UTC", python="3.11.7", runtime_s=300.0, repeats=3, window_steps=2,
      load_before="load average: 0.10", load_during="load average: 2.00",
      load_after="load average: 1.00",
      versions=dict(jax="0.1", flax="0.2", optax="0.3", numpy="2.0", torch="2.13.0+cpu"),
      setup=setup,
      windows={"jax|ae": [1.0, 1.0, 1.2], "torch|ae": [2.0, 2.0, 2.4],
               "jax|vae": [1.0, 1.0, 1.1], "torch|vae": [1.1, 1.1, 1.3]},
      cache_sizes={"jax|ae": 1, "jax|vae": 1},
      profile={"ae": dict(forward=0.1, forward_backward=0.4),
               "vae": dict(forward=0.1, forward_backward=0.4)},
      gemm={"jax": 190.0, "numpy": 200.0, "torch": 180.0, "maxrss_mb": 900.0},
      memory={"jax|ae": 1800.0, "torch|ae": 760.0, "jax|vae": 1100.0, "torch|vae": 800.0},
      op_profile={"ae": {"convolutions and matrix products": 0.6,
                         "layout copies (transposes)": 0.2,
                         "elementwise and reductions (fused loops)": 0.2},
                  "vae": {"convolutions and matrix products": 0.5}},
      pipeline=dict(images_per_s=640.0, prepare_seconds=0.5),
      evaluation=dict(volumes=10, volumes_per_s=2.5, slices_per_s=200.0, first_call=0.8,
                      compiled_versions=1))


def _loaded_run():
  results = _idle_run()
  results["gemm"].update(jax=60.0, numpy=55.0, torch=50.0)
  return results


def _run_with_settings():
  """Adds the settings phase: defaults 64 and 32 images/s, PyTorch with one thread 16."""
  results = copy.deepcopy(_idle_run())
  results["ablation_repeats"] = 3
  results["setup"]["torch, 1 thread|ae"] = dict(params=2447233, batch=32)
  results["windows"].update({"jax|ae_settings": [1.0] * 3, "torch|ae_settings": [2.0] * 3,
                             "torch, 1 thread|ae_settings": [4.0] * 3})
  return results


def _run_with_changes():
  """Settings with the changes undone (AE 32 images/s before one, 48 before the other, 80 in
  the fresh default worker), the twin with the JAX rewrite (40), memory with the jitted init
  undone, and a predict table."""
  results = _run_with_settings()
  for label, seconds in ((benchmark_report.FRESH_DEFAULT, 0.8),
                         ("jax, resize + conv upsampling (before)", 2.0),
                         ("jax, nn.Conv output layer (before)", 4 / 3),
                         ("torch, upsampling as the JAX models compute it", 1.6)):
    results["setup"][f"{label}|ae"] = dict(params=2447233, batch=32)
    results["windows"][f"{label}|ae_settings"] = [seconds] * 3
  results["memory"].update({"jax, jitted_init undone|ae": 2100.0,
                            "jax, jitted_init undone|vae": 1300.0})
  results["predict"] = {"markdown": "| stage | scan 1, s |\n|---|---:|\n| imports | 2.85 |\n"}
  return results


def test_changes_are_reported_against_the_way_they_replaced():
  report = benchmark_report.render(_run_with_changes(), images_per_s)
  assert not _missing(report, [
      "AE training: 32.0 -> 80.0 images/s (**2.50x**)",
      "AE training: 48.0 -> 80.0 images/s (**1.67x**)",
      "peak RSS AE 2100 -> 1800 MB, VAE 1300 -> 1100 MB",
      "ran 40.0 images/s (1.25x its plain default): like for like, JAX / PyTorch = **2.00x**",
      "| imports | 2.85 |",
  ])
  assert "Not measured in this run" not in report


def _missing(report, quoted):
  """The quoted passages the report lacks: all of them are shown when a test fails."""
  return [passage for passage in quoted if passage not in report]


def test_derived_numbers_are_the_measured_ratios():
  numbers = benchmark_report.derive_numbers(_idle_run(), images_per_s)
  ae, vae = numbers.models["ae"], numbers.models["vae"]
  assert (ae.jax_rate, ae.torch_rate, ae.ratio, ae.best_ratio) == (64, 32, 2, 2)
  assert round(vae.ratio, 6) == 1.1
  assert (ae.jax_step, ae.achieved_gflops, ae.fraction_of_peak) == (0.5, 128, 0.64)
  assert round(ae.backward_per_forward, 6) == 3
  assert ae.forward_backward_share == 0.8
  assert numbers.pipeline_vs_training == 10
  assert numbers.quiet and numbers.settings is None
  assert not benchmark_report.derive_numbers(_loaded_run(), images_per_s).quiet


def test_report_quotes_the_numbers_of_the_run():
  report = benchmark_report.render(_idle_run(), images_per_s)
  assert not _missing(report, [
      "python bench/train_benchmark.py --repeats=3 --window_steps=2",
      "Measured 2026-01-01 00:00 UTC, in 5.0 min.",
      "| AE | 2,447,233 | 64.0 | 32.0 | **2.00x** | 0.500 | 1.000 | 2.00x |",
      "| VAE | 3,495,937 | 64.0 | 58.2 | **1.10x** | 0.500 | 0.550 | 1.10x |",
      "The target was >= 1.2x (the aim 1.5x). It is **not reached** for VAE in this run",
      "| AE | 64.0 | 0.500 | 128.0 | 200 | 64% |",
      "| AE | 0.100 | 0.400 | 0.500 | 3.0x |",
      "Forward + backward take 80% of the AE\n  step",
      "run at 67% of the forward's FLOP rate",
      "**640 images/s**, 10x the fastest training step",
      "**2.50 volumes/s** (200 slices/s)",
      "| AE | 1800 | 760 | **2.37x** | no |",
      "| VAE | 1100 | 800 | **1.38x** | no |",
      "The target, at most 1.0x the eager twin's peak: **not reached** for",
      "| convolutions and matrix products | 0.600 (60%) | 0.500 (100%) |",
      "| total (all device threads) | 1.000 | 0.500 |",
      "the AE step's thread time is: convolutions and matrix products 60%, layout copies",
      "Not measured in this run (`--predict_workdir` unset)",
  ])
  assert "## What each change bought" not in report  # nothing was undone in this run
  assert "PyTorch's eager step is the faster one" not in report  # neither is slower here
  assert "## Settings tried" not in report
  assert "In the settings phase" not in report


def test_wording_follows_whether_the_machine_was_idle():
  idle = benchmark_report.render(_idle_run(), images_per_s)
  loaded = benchmark_report.render(_loaded_run(), images_per_s)
  assert not _missing(idle, [
      "**The machine was otherwise idle**: the GEMM measured in the run reached 200",
      "- **Not the load.**"])
  assert not _missing(loaded, [
      "(its GEMM reached only 60 GFLOP/s of the ~200 idle)",
      "On the fastest windows it is not reached for VAE:",
      "the fastest-window ratio (2.00x AE,\n  1.10x VAE)"])
  assert "otherwise idle" not in loaded and "far below" not in idle


def test_settings_phase_is_reported_against_each_framework_default():
  report = benchmark_report.render(_run_with_settings(), images_per_s)
  assert not _missing(report, [
      "(median of 3 windows each)",
      "| jax, default (as train.py) | 64.0 | 1.00x |",
      "| torch, 2 threads, NCHW (default above) | 32.0 | 1.00x |",
      "| torch, 1 thread | 16.0 | 0.50x |",
      "0.25x JAX's (JAX / PyTorch-1-thread = 4.00x)"])
  assert "--xla_cpu_use_onednn" not in report  # only said when that setting was measured


def test_sections_come_in_order_each_heading_its_own_paragraph():
  for results in (_idle_run(), _loaded_run(), _run_with_settings(), _run_with_changes()):
    report = benchmark_report.render(results, images_per_s)
    settings = ["Settings tried (AE)"] if "ablation_repeats" in results else []
    changes = ["What each change bought"] if "jax, nn.Conv output layer (before)|ae" in results[
        "setup"] else []
    expected = ["Training throughput", "Compilation (JAX)", "Achieved FLOP rate (JAX)",
                "Where the JAX step's time goes", "Where the JAX step's time goes, by operation",
                *settings, *changes, "What bounds it", "Input pipeline", "Evaluation",
                "Peak memory", "predict, stage by stage"]
    headings = [line[3:] for line in report.splitlines() if line.startswith("## ")]
    assert headings == expected
    for heading in headings:
      assert f"\n\n## {heading}\n\n" in report, heading


def test_the_report_says_how_many_devices_and_which_kernels_the_jax_step_ran_on():
  results = _idle_run()
  results["versions"].update(device_count=2, onednn=True)
  report = benchmark_report.render(results, images_per_s)
  assert not _missing(report, ["over 2 XLA CPU",
                               "XLA's oneDNN kernels (`--xla_cpu_use_onednn=true`)"])
  results["versions"].update(device_count=8, onednn=False)
  report = benchmark_report.render(results, images_per_s)
  assert not _missing(report, ["over 8 XLA CPU", "XLA's own kernels"])
