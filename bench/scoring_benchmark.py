"""Time to score one volume, from preprocessed slices to its metrics.

    python bench/scoring_benchmark.py [--trained_workdir=runs/vae] [--slices=155] [--repeats=5]

The default VAE (configs/vae.py) scores a 155-slice 128x128 volume: jitted
reconstruction over all slices at once (sharded over the host's CPU devices),
post-processing, thresholding at three healthy FPRs, lesion-wise detection and
exact per-volume AUROC/AUPRC/best Dice. Compilation is timed apart from the
steady state; the steady state is the median of several repeats. With
--trained_workdir the trained checkpoint is used (the time does not depend on the
weights, only on the architecture).
"""

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

flags.DEFINE_string("trained_workdir", None, "Trained run to take the parameters from (optional).")
flags.DEFINE_integer("slices", 155, "Slices in the volume.")
flags.DEFINE_integer("repeats", 5, "Timed repeats after the first (compiling) call.")
flags.DEFINE_integer("devices", 4, "XLA CPU devices to split the host into.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from brainseg_jax import parallel
  parallel.split_host_into_devices(FLAGS.devices)

  import jax
  import numpy as np

  from brainseg_jax import checkpoints, metrics, postprocess, scoring
  from brainseg_jax.datasets.input_pipeline import Volume
  from brainseg_jax.models import create_model, create_train_state
  from configs import vae

  config = vae.get_config()
  model = create_model(config)
  if FLAGS.trained_workdir:
    state, _ = checkpoints.restore_trained(config, FLAGS.trained_workdir, model)
  else:
    state = create_train_state(model, config)
  scorer = scoring.scorer_for(model, config)
  state = scorer.place(state)

  rng = np.random.default_rng(0)
  size = config.dataset.resolution
  shape = (FLAGS.slices, size, size, 1)
  yy, xx = np.mgrid[:size, :size]
  brain = np.broadcast_to(((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.4 * size) ** 2)
                          [None, :, :, None], shape)
  truth = np.zeros(shape, bool)
  truth[60:80, 40:60, 50:70] = True
  image = np.where(brain, rng.random(shape, np.float32) * 0.2 + 0.5 + 0.4 * truth, 0)
  volume = Volume("bench", "glioma", image.astype(np.float32), brain, truth)
  fprs, thresholds = (0.01, 0.05, 0.1), {0.01: 0.3, 0.05: 0.2, 0.1: 0.15}
  post = config.eval.postprocess

  def score_and_measure():
    recon, anomaly = scoring.anomaly_maps(scorer, state, volume, post)
    b, t = brain[..., 0], truth[..., 0]
    result = {}
    for fpr in fprs:
      prediction = postprocess.clean_prediction(anomaly > thresholds[fpr], post.min_component_size)
      result[fpr] = (metrics.confusion_counts(prediction[b], t[b]),
                     metrics.lesion_detection(prediction, t))
    result["ranking"] = metrics.ranking_metrics(anomaly[b], t[b])
    return result

  start = time.perf_counter()
  score_and_measure()
  first = time.perf_counter() - start
  times = []
  for _ in range(FLAGS.repeats):
    start = time.perf_counter()
    score_and_measure()
    times.append(time.perf_counter() - start)
  jax_start = time.perf_counter()
  for _ in range(FLAGS.repeats):
    jax.block_until_ready(scorer(state, volume.image, volume.brain_mask))
  model_only = (time.perf_counter() - jax_start) / FLAGS.repeats
  print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}; volume {shape[:3]}; "
        f"compiled versions: {scorer.compiled_versions()}")
  print(f"first call (with compilation): {first:.2f} s")
  print(f"steady state, end to end: median {statistics.median(times):.3f} s "
        f"(min {min(times):.3f}, max {max(times):.3f}) over {FLAGS.repeats} repeats")
  print(f"of which the jitted model: {model_only:.3f} s")


if __name__ == "__main__":
  app.run(main)
