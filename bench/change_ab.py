"""What one speed change buys: the train step with it against the step with it undone.

    python bench/change_ab.py --changes=conv2x2_gemm_grad,activation_before_depth_to_space \
        --models=ae,vae --ab_rounds=10

    python bench/change_ab.py --changes=twin --models=ae,vae   # JAX against the PyTorch twin
    python bench/change_ab.py --changes=one_device_per_core,onednn --models=ae,unet_dae

Writes docs/change_ab.md. For each change and model, two fresh JAX workers of
bench/train_benchmark.py (devices as training, huge-page malloc, compiled ahead, as a
training process), one of them started with --undo=<change>, and nothing else
alive; their timed windows alternate, the order flipping every round, so that
neither always runs right after the other. A change worth a few per cent is
below the spread of train_benchmark.py's settings phase (3 windows per setting
among ~20 live workers); this is the measurement for it. `twin` in --changes
times the default JAX worker against the PyTorch twin (2 threads) the same way, and a
CPU_SETTINGS name times it against a JAX worker started with other devices or kernels.
"""

import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from absl import app, flags  # noqa: E402

from bench import benchmark_report, train_benchmark  # noqa: E402

flags.DEFINE_list("changes", list(benchmark_report.SPEED_CHANGES),
                  "Changes to measure (keys of benchmark_report.CHANGES), or `twin`.")
flags.DEFINE_list("models", ["ae", "vae"], "Models to train.")
flags.DEFINE_integer("ab_rounds", 10, "Rounds: one timed window of each worker per round.")
DEFAULT_OUTPUT = os.path.join(ROOT, "docs", "change_ab.md")
flags.DEFINE_string("ab_output", DEFAULT_OUTPUT, "Markdown report.")
FLAGS = flags.FLAGS

TWIN = "twin"
# The CPU defaults (parallel.split_host_into_devices) against other settings: worker args
# of the "undone" side and what it is.
CPU_SETTINGS = {
    "one_device_per_core": (("--devices=2",), "two XLA devices per core (default; 4 on 2 "
                            "cores), against one per core (2)"),
    "onednn": (("--xla_flags=--xla_cpu_use_onednn=true",), "XLA's own kernels (default), "
               "against XLA:CPU's oneDNN kernels"),
}


def measure(change, name):
  """Images/s of each window, with the change and with it undone."""
  common = ("--worker=jax", "--noflops")
  other = (("--worker=torch", "--threads=2") if change == TWIN
           else (*common, *CPU_SETTINGS[change][0]) if change in CPU_SETTINGS
           else (*common, f"--undo={change}"))
  workers = {"with": train_benchmark.Worker("with", *common),
             "undone": train_benchmark.Worker("undone", *other)}
  try:
    batch = workers["with"]("setup", name=name)["batch"]
    workers["undone"]("setup", name=name)
    rates = {label: [] for label in workers}
    for round_index in range(FLAGS.ab_rounds):
      order = ("with", "undone") if round_index % 2 == 0 else ("undone", "with")
      for label in order:
        seconds = workers[label]("window", name=name, steps=FLAGS.window_steps)["seconds"]
        rates[label].append(FLAGS.window_steps * batch / seconds)
  finally:
    for worker in workers.values():
      worker.close()
  return rates


def main(argv):
  del argv
  unknown = sorted(set(FLAGS.changes) - set(benchmark_report.CHANGES) - {TWIN}
                   - set(CPU_SETTINGS))
  if unknown:
    raise app.UsageError(f"--changes: unknown {unknown}; known: "
                         f"{[*benchmark_report.CHANGES, TWIN, *CPU_SETTINGS]}")
  date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
  rows = []
  for change in FLAGS.changes:
    for name in FLAGS.models:
      train_benchmark._log(f"{change}, {name}")
      rates = measure(change, name)
      with_, undone = statistics.median(rates["with"]), statistics.median(rates["undone"])
      per_round = [a / b for a, b in zip(rates["with"], rates["undone"], strict=True)]
      faster = sum(r > 1 for r in per_round)
      what = ("JAX (default) against the PyTorch twin" if change == TWIN
              else CPU_SETTINGS[change][1] if change in CPU_SETTINGS
              else benchmark_report.CHANGES[change])
      rows.append(f"| {what} | {name.upper()} | {undone:.1f} | "
                  f"{with_:.1f} | **{with_ / undone:.3f}x** | {faster} of {len(per_round)} | "
                  f"{min(per_round):.2f}-{max(per_round):.2f} |")
      train_benchmark._log(rows[-1])
  lines = [
      "# What each speed change buys, measured alone",
      "",
      "Regenerate with `python bench/change_ab.py "
      f"--changes={','.join(FLAGS.changes)} --models={','.join(FLAGS.models)} "
      f"--ab_rounds={FLAGS.ab_rounds} --window_steps={FLAGS.window_steps}"
      + ("" if FLAGS.ab_output == DEFAULT_OUTPUT
         else f" --ab_output={os.path.relpath(FLAGS.ab_output, ROOT)}")
      + "` (see its docstring for the protocol).",
      "",
      f"Measured {date}: two fresh JAX workers per row (devices and kernels as training), one with "
      "the change undone, nothing else running; "
      f"{FLAGS.ab_rounds} rounds of one {FLAGS.window_steps}-step window each, alternating "
      f"which goes first; images/s are medians. `uptime` after: `{train_benchmark._uptime()}`.",
      "",
      "For the `twin` rows, \"undone\" is the PyTorch twin (eager, 2 threads); for the CPU rows,",
      "a JAX worker with the other setting.",
      "",
      "| change | model | undone, images/s | with it, images/s | with / undone | rounds "
      "faster with it | per-round ratio range |",
      "|---|---|---:|---:|---:|---:|---:|",
      *rows,
      "",
  ]
  with open(FLAGS.ab_output, "w") as f:
    f.write("\n".join(lines))
  train_benchmark._log(f"wrote {FLAGS.ab_output}")


if __name__ == "__main__":
  app.run(main)
