"""Data parallelism: one mesh axis over every device of every process.

Training is `jax.jit` with `NamedSharding`s: parameters replicated, the batch
split along its first axis. XLA inserts the gradient all-reduce itself. This is
the form `pmap` is now built on, and it ran 2x faster than `pmap` on CPU.
"""

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from data_prep import cores

DATA_AXIS = "data"


def split_host_into_devices(num_devices: int | None = None):
  """Exposes `num_devices` XLA CPU devices (default: `default_cpu_devices`) before JAX starts.

  On a CPU-only machine one XLA device keeps about one core busy; the batch
  sharded over several devices trains faster than one multi-threaded device
  (docs/speed.md). It has no effect on GPU or TPU backends. An explicit
  --xla_force_host_platform_device_count in XLA_FLAGS wins. With several
  devices each runs its kernels on one thread (`single_threaded_device_kernels`).
  """
  num_devices = num_devices or default_cpu_devices()
  if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    jax.config.update("jax_num_cpu_devices", num_devices)
    if num_devices == 1:
      return  # one device: let its kernels use every core
  single_threaded_device_kernels()


def default_cpu_devices() -> int:
  """XLA CPU devices for this host: `devices_for_cores` of the cores this process may use."""
  return devices_for_cores(cores.usable())


def devices_for_cores(cores: int) -> int:
  """Two devices per core, rounded down to a power of two, at most 8.

  An XLA CPU device runs one operation at a time; two per core keep a core busy
  while the other device waits at a collective or a small operation (on 2
  cores 4 devices were at least as fast as 2 for every model: docs/speed.md). A
  power of two divides the configs' batch sizes (8 in :smoke, 32), and beyond 8
  a 32-slice batch leaves each device too little.
  """
  devices = 1
  while devices * 2 <= min(2 * cores, 8):
    devices *= 2
  return devices


def single_threaded_device_kernels():
  """Runs each XLA CPU device's kernels on one thread (must run before JAX starts).

  With several CPU devices on a few cores, the devices already spread the work
  over the cores (the AE step takes the same time either way), and Eigen threads
  inside each device only oversubscribe the cores. Multi-threaded kernels on
  several devices can also leave device threads waiting at a collective for one
  another until XLA aborts the all-reduce; single-threaded kernels cannot.
  """
  flag = "--xla_cpu_multi_thread_eigen"
  flags = os.environ.get("XLA_FLAGS", "")
  if flag not in flags:
    os.environ["XLA_FLAGS"] = f"{flags} {flag}=false".strip()


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


def global_batch(local_batch, sharding: NamedSharding):
  """Assembles the global batch from every process's local part, array by array.

  `local_batch` is an array or a pytree of arrays (a batch dict): every leaf is
  split along its first axis the same way.
  """
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)
