"""Data parallelism: one mesh axis over every device of every process.

Training is `jax.jit` with `NamedSharding`s: parameters replicated, the batch
split along its first axis. XLA inserts the gradient all-reduce itself. This is
the form `pmap` is now built on, and it ran 2x faster than `pmap` on CPU.
"""

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def split_host_into_devices(num_devices: int):
  """Exposes `num_devices` XLA CPU devices; must run before JAX initialises.

  On a CPU-only machine one XLA device keeps about one core busy; several
  devices with the batch sharded over them trained 2x faster on 2 cores.
  It has no effect on GPU or TPU backends. An explicit
  --xla_force_host_platform_device_count in XLA_FLAGS wins.
  """
  if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    jax.config.update("jax_num_cpu_devices", num_devices)
  tolerate_slow_collectives()


def tolerate_slow_collectives(seconds: int = 900):
  """Raises XLA:CPU's 40 s limit on waiting for all devices at a collective.

  Several CPU devices share a few cores; on a loaded machine one device's
  thread can be descheduled long enough that XLA aborts the whole process
  ("Termination timeout for all reduce ... exceeded"), which we saw when other
  jobs ran beside training. Waiting longer is always better than aborting.
  """
  flag = "--xla_cpu_collective_call_terminate_timeout_seconds"
  flags = os.environ.get("XLA_FLAGS", "")
  if flag not in flags:
    os.environ["XLA_FLAGS"] = f"{flags} {flag}={seconds}".strip()


def initialize_distributed(coordinator_address=None, num_processes=None, process_id=None):
  """Joins a multi-process run; afterwards jax.devices() spans every process.

  Unset arguments are left to JAX's cluster detection (SLURM, TPU, ...). On
  CPU the cross-process collectives need gloo.
  """
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)


def data_mesh(devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def global_batch(local_batch: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """Assembles the global batch from every process's local part."""
  return jax.make_array_from_process_local_data(sharding, local_batch)
