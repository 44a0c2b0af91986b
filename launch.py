"""The project's main job from a checkout: `python launch.py --config=configs/vae.py`.

The command itself is brainseg_jax/launch.py (installed: `brainseg-train`).
"""

if __name__ == "__main__":
  # Before JAX is imported: the process restarts itself once with malloc set for
  # XLA's per-step buffers (huge pages; see brainseg_jax/host_memory.py).
  from brainseg_jax import host_memory
  host_memory.restart_with_huge_pages()

  from brainseg_jax import launch
  launch.main()
