"""The training benchmark compares like with like, and times a step that does not recompile.

A JAX/PyTorch ratio only means something if the PyTorch twin is the same
network: same parameter count and, with the Flax parameters copied in, the
same reconstruction. (That no step recompiles after the first is checked in
tests/test_train.py, which runs without PyTorch.)
"""

import jax
import numpy as np
import pytest

from brainseg_jax.models import create_model, create_train_state
from configs import ae as ae_config
from configs import unet_dae as unet_dae_config
from configs import vae as vae_config

torch = pytest.importorskip("torch", reason="bench-only dependency: bench/requirements.txt")
torch_twin = pytest.importorskip("bench.torch_twin")


@pytest.mark.parametrize("fused_upsample", [False, True], ids=["resize_conv", "fused"])
@pytest.mark.parametrize("config_module", [ae_config, vae_config], ids=["ae", "vae"])
def test_twin_is_the_same_network_as_the_default_model(config_module, fused_upsample):
  config = config_module.get_config()
  model = create_model(config)
  state = create_train_state(model, config)
  module, _ = torch_twin.create(config, fused_upsample=fused_upsample)
  assert torch_twin.num_parameters(module) == sum(x.size for x in jax.tree.leaves(state.params))

  torch_twin.load_flax_params(module, state.params)
  size = config.dataset.resolution
  images = np.random.default_rng(0).random((2, size, size, 1), np.float32)
  expected = np.asarray(model.reconstruct(state, images))
  with torch.no_grad():
    x = torch.tensor(images).permute(0, 3, 1, 2)
    # reconstruct() decodes the VAE's posterior mean: no sampling.
    out = module(x, sample=False)[0] if config.model.name == "vae" else module(x)
  np.testing.assert_allclose(out.permute(0, 2, 3, 1).numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("fused_upsample", [False, True], ids=["resize_conv", "fused"])
def test_unet_twin_is_the_same_network_as_the_denoising_unet(fused_upsample):
  config = unet_dae_config.get_config()
  config.dataset.resolution = 64
  model = create_model(config)
  state = create_train_state(model, config)
  # Non-trivial group norm parameters, so a swapped scale/bias would show.
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: x + 0.1 * np.random.default_rng(len(path)).standard_normal(x.shape)
      .astype(x.dtype) if "GroupNorm" in jax.tree_util.keystr(path) else x, state.params)
  state = state.replace(params=params)
  module, _ = torch_twin.create(config, fused_upsample=fused_upsample)
  assert torch_twin.num_parameters(module) == sum(x.size for x in jax.tree.leaves(params))
  torch_twin.load_flax_params(module, params)
  images = np.random.default_rng(0).random((2, 64, 64, 1), np.float32)
  expected = np.asarray(model.reconstruct(state, images))
  with torch.no_grad():
    out = module(torch.tensor(images).permute(0, 3, 1, 2))
  np.testing.assert_allclose(out.permute(0, 2, 3, 1).numpy(), expected, atol=1e-4)


def test_unet_twin_noise_is_coarse_and_its_masked_step_runs():
  config = unet_dae_config.get_config("smoke")
  config.dataset.resolution = 32
  torch.manual_seed(0)
  noise = torch_twin.shifted_coarse_noise((4, 1, 32, 32), 0.2, 16)
  assert noise.shape == (4, 1, 32, 32)
  assert 0.1 < float(noise.std()) < 0.3
  module, step = torch_twin.create(config)
  images = torch.rand(4, 1, 32, 32)
  brain = torch.zeros(4, 1, 32, 32, dtype=torch.bool)
  brain[..., 8:24, 8:24] = True
  assert torch.isfinite(step(images, brain))


def test_twin_train_step_lowers_the_loss():
  config = ae_config.get_config("smoke")
  config.dataset.resolution = 32
  config.warmup_steps = 1
  torch.manual_seed(0)
  torch.set_num_threads(1)  # tiny tensors: more threads only add synchronisation
  module, step = torch_twin.create(config)
  images = torch.rand(8, 1, 32, 32)
  losses = [float(step(images)) for _ in range(20)]
  assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.slow  # inductor compiles C++ kernels: about a minute per model
@pytest.mark.parametrize("name", ["ae", "vae", "unet_dae"])
def test_compiled_twin_computes_what_the_eager_twin_does(name):
  """torch.compile changes the kernels, not the numbers: same loss, same parameters after steps.

  The eager twin is checked against the Flax model above; with the same start and
  the same random noise (inductor told to draw it as eager PyTorch does), the
  compiled one follows it step by step.
  """
  import torch._inductor.config
  config = {"ae": ae_config, "vae": vae_config, "unet_dae": unet_dae_config}[name].get_config(
      "smoke")
  config.dataset.resolution = 32
  torch.set_num_threads(1)
  images = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
  brain = torch.ones(4, 1, 32, 32, dtype=torch.bool)
  runs = {}
  for compiled in (False, True):
    torch.manual_seed(0)
    module, step = torch_twin.create(config, compiled=compiled)
    with torch._inductor.config.patch(fallback_random=True):
      losses = [float(step(images, brain)) for _ in range(3)]
    runs[compiled] = losses, [p.detach().clone() for p in module.parameters()]
  (eager_losses, eager_params), (compiled_losses, compiled_params) = runs[False], runs[True]
  np.testing.assert_allclose(compiled_losses, eager_losses, rtol=1e-4)
  for a, b in zip(compiled_params, eager_params, strict=True):
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)
  assert eager_losses[-1] != eager_losses[0]  # the steps did train
