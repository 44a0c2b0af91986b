"""Training loop for every model family (see models.base.Model).

Read top to bottom: check the config, build the mesh, model and state, resume
from the latest checkpoint if there is one, then run jitted train steps on
batches sharded over every device, logging and checkpointing as it goes.

A resumed run reproduces an uninterrupted one exactly: the batch of step i and
the random key of step i are both pure functions of (seed, i).
"""

import time

import jax
import ml_collections
import numpy as np
from absl import logging

from brainseg_jax import checkpoints, host_memory, parallel, standardization
from brainseg_jax import config as config_lib
from brainseg_jax import workdir as workdir_lib
from brainseg_jax.datasets import input_pipeline
from brainseg_jax.errors import UserError
from brainseg_jax.metric_writer import MetricWriter
from brainseg_jax.models import Model, create_model, create_train_state


def jit_train_step(model: Model, mesh):
  """The model's train step, compiled once per stage: state replicated, batch split over `mesh`.

  The batch is a dict of arrays (see input_pipeline.train_batches); one sharding
  for the whole argument splits every one of them along its first axis.
  """
  replicated = parallel.replicated(mesh)
  return jax.jit(model.train_step, static_argnums=2,
                 in_shardings=(replicated, parallel.batch_sharded(mesh)),
                 out_shardings=(replicated, replicated),
                 donate_argnums=0)


def compile_ahead(train_step, state, batch, stage: int = 0) -> None:
  """Compiles `train_step` for `stage` before its first call, then frees the compiler's memory.

  The compiled step goes into jit's own cache, so the call that follows runs it
  without compiling again. Compiling apart lets the compiler's freed heap go back
  to the OS (host_memory.release_freed_heap) before the step allocates its
  buffers: a training process peaks 206-271 MB lower (docs/benchmarks.md).
  """
  train_step.lower(state, batch, stage).compile()
  host_memory.release_freed_heap()


def train(config: ml_collections.ConfigDict, workdir: str, mesh=None):
  """Trains to `config.num_train_steps`, resuming from the workdir's latest checkpoint.

  Returns the final train state (None for models with nothing to train).
  """
  workdir = workdir_lib.ensure_writable(workdir)
  mesh = parallel.data_mesh() if mesh is None else mesh
  config_lib.check(config, mesh.size)
  with workdir_lib.exclusive(workdir):
    return _train(config, workdir, mesh)


def _train(config: ml_collections.ConfigDict, workdir: str, mesh):
  model = create_model(config)
  if not model.trainable:
    logging.info("%s has nothing to train", model.name)
    return None
  builder = input_pipeline.get_builder(config.dataset)
  pooled = [input_pipeline.get_builder(block)
            for block in config_lib.pooled_datasets(config.dataset)]
  state = create_train_state(model, config)
  state = jax.device_put(state, parallel.replicated(mesh))

  checkpointer = checkpoints.Checkpointer(workdir, config.keep_checkpoints)
  if checkpointer.latest_step() is not None:
    state = checkpointer.restore_newest_good(state)
    logging.info("resumed from step %d in %s", int(state.step), checkpointer.directory)
  start_step = int(state.step)
  logging.info("batch %d split over %d %s devices", config.batch_size, mesh.size,
               mesh.devices.flat[0].platform)
  if start_step >= config.num_train_steps:
    logging.info("already trained to step %d", start_step)
    return state

  batches = input_pipeline.train_batches(
      builder, config.batch_size, config.seed, start_step, dataset_config=config.dataset,
      standard=standardization.for_run(config, workdir, builder), pooled=pooled)
  train_step = jit_train_step(model, mesh)
  data_sharding = parallel.batch_sharded(mesh)
  writer = MetricWriter(workdir, resumed_from=start_step)
  pending_metrics = []
  last_log_time, last_log_step = time.time(), start_step
  session_start = last_log_time
  earlier_sessions_seconds = workdir_lib.read_train_seconds(workdir, start_step)

  compiled_stages = set()

  for step in range(start_step + 1, config.num_train_steps + 1):
    batch = parallel.global_batch(next(batches), data_sharding)
    stage = model.stage_of(step - 1)
    if stage not in compiled_stages:
      compile_ahead(train_step, state, batch, stage)
      compiled_stages.add(stage)
    state, metrics = train_step(state, batch, stage)
    pending_metrics.append(metrics)  # stays on device: no sync in the inner loop

    if step % config.log_every_steps == 0 or step == config.num_train_steps:
      summary = {k: float(np.mean(v)) for k, v in
                 jax.tree.map(lambda *xs: np.stack(xs), *jax.device_get(pending_metrics)).items()}
      pending_metrics = []
      now = time.time()
      steps_per_sec = (step - last_log_step) / (now - last_log_time)
      last_log_time, last_log_step = now, step
      writer.write_scalars(step, {**summary, "steps_per_sec": steps_per_sec})
      seconds_left = (config.num_train_steps - step) / steps_per_sec
      logging.info("step %d/%d  loss %.4f  %.2f steps/s  %s left", step,
                   config.num_train_steps, summary["loss"], steps_per_sec,
                   _format_seconds(seconds_left))
      if not np.isfinite(summary["loss"]):
        raise UserError(f"loss became {summary['loss']} at step {step}: lower "
                        "learning_rate or check the data")

    if step % config.checkpoint_every_steps == 0 or step == config.num_train_steps:
      checkpointer.save(step, state, config.to_dict())
      if jax.process_index() == 0:
        workdir_lib.write_train_seconds(
            workdir, step, earlier_sessions_seconds + time.time() - session_start)

  checkpointer.wait_until_finished()
  checkpointer.close()
  writer.close()
  return state


def _format_seconds(seconds: float) -> str:
  minutes, seconds = divmod(int(seconds), 60)
  return f"{minutes}m{seconds:02d}s"
