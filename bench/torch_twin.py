"""PyTorch twin of the default AE and VAE, for the training-throughput comparison.

The speed claim is only meaningful against the network a user would otherwise
write in PyTorch, so the twin mirrors `brainseg_jax.models.layers` layer by layer:
3x3 stride-2 convolutions + leaky ReLU(0.2) down, a dense bottleneck, nearest 2x
resize + 3x3 convolution up, a final 3x3 convolution to one channel. It also
matches the numerics, so a test can copy the Flax parameters in and compare
outputs:
  * Flax's SAME padding of a stride-2 3x3 convolution on an even input pads
    0 before and 1 after; PyTorch's `padding=1` pads 1 on both sides (same shape,
    shifted sampling grid), so the twin pads explicitly.
  * Flax flattens (and un-flattens) the bottleneck in HWC order; PyTorch is NCHW,
    so the twin permutes around the dense layers (8x8x128 values: negligible).
The optimiser is the same chain as `models/reconstruction.make_optimizer`:
global-norm clipping, then Adam under a linear warm-up + cosine decay.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


class Encoder(nn.Module):
  def __init__(self, channels):
    super().__init__()
    inputs = (1, *channels[:-1])
    self.convs = nn.ModuleList(
        nn.Conv2d(i, o, 3, stride=2, padding=0) for i, o in zip(inputs, channels, strict=True))

  def forward(self, x):
    for conv in self.convs:
      x = F.leaky_relu(conv(F.pad(x, (0, 1, 0, 1))), 0.2)
    return x


class Decoder(nn.Module):
  def __init__(self, channels):
    super().__init__()
    reversed_channels = tuple(reversed(channels))
    inputs = (channels[-1], *reversed_channels[:-1])
    self.convs = nn.ModuleList(
        nn.Conv2d(i, o, 3, padding=1) for i, o in zip(inputs, reversed_channels, strict=True))
    self.out = nn.Conv2d(channels[0], 1, 3, padding=1)

  def forward(self, z):
    for conv in self.convs:
      z = F.leaky_relu(conv(F.interpolate(z, scale_factor=2, mode="nearest")), 0.2)
    return self.out(z)


class AutoEncoder(nn.Module):
  """Twin of `models.ae.AutoEncoder` (dense bottleneck); `num_outputs=2` gives the VAE's."""

  def __init__(self, channels, latent_dim, resolution, num_outputs=1):
    super().__init__()
    self.spatial = resolution // 2 ** len(channels)
    self.channels = channels
    flat = self.spatial * self.spatial * channels[-1]
    self.encoder = Encoder(channels)
    self.bottleneck = nn.Linear(flat, num_outputs * latent_dim)
    self.from_latent = nn.Linear(latent_dim, flat)
    self.decoder = Decoder(channels)

  def encode(self, x):
    h = self.encoder(x)
    return self.bottleneck(h.permute(0, 2, 3, 1).flatten(1))  # HWC order, as in Flax

  def decode(self, z):
    s, c = self.spatial, self.channels[-1]
    h = F.leaky_relu(self.from_latent(z), 0.2).reshape(-1, s, s, c).permute(0, 3, 1, 2)
    return self.decoder(h)

  def forward(self, x):
    return self.decode(self.encode(x))


class VariationalAutoEncoder(AutoEncoder):
  """Twin of `models.vae.VariationalAutoEncoder`: returns (reconstruction, mean, log_var)."""

  def __init__(self, channels, latent_dim, resolution):
    super().__init__(channels, latent_dim, resolution, num_outputs=2)

  def forward(self, x, sample=True):
    mean, log_var = self.encode(x).chunk(2, dim=-1)
    log_var = log_var.clamp(-10.0, 10.0)
    z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean) if sample else mean
    return self.decode(z), mean, log_var


def ae_loss(module, images):
  """Mean over the batch of the per-slice sum of squared errors (as `models.ae.loss_fn`)."""
  return torch.square(module(images) - images).sum(dim=(1, 2, 3)).mean()


def vae_loss(module, images, kl_weight=1.0):
  """Per-slice SSE + kl_weight * KL, batch means (as `models.vae.loss_fn`)."""
  recon, mean, log_var = module(images)
  reconstruction = torch.square(recon - images).sum(dim=(1, 2, 3)).mean()
  kl = (0.5 * (torch.exp(log_var) + torch.square(mean) - 1.0 - log_var)).sum(dim=1).mean()
  return reconstruction + kl_weight * kl


def warmup_cosine(config):
  """The multiplier of optax.warmup_cosine_decay_schedule(0 -> peak -> 1 % of peak)."""
  warmup, total, end = config.warmup_steps, config.num_train_steps, 0.01

  def factor(step):
    if step < warmup:
      return step / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * progress))

  return factor


def create(config, foreach=True):
  """(module, train_step) for an experiment config; train_step(images NCHW) -> loss tensor.

  `foreach=True` is PyTorch's multi-tensor Adam, its fastest eager optimiser on
  CPU: the twin gets the best settings a PyTorch user would pick.
  """
  channels, latent = tuple(config.model.channels), config.model.latent_dim
  resolution = config.dataset.resolution
  if config.model.name == "ae":
    module = AutoEncoder(channels, latent, resolution)
    loss_fn = ae_loss
  elif config.model.name == "vae":
    module = VariationalAutoEncoder(channels, latent, resolution)
    loss_fn = lambda m, x: vae_loss(m, x, config.model.kl_weight)
  else:
    raise ValueError(f"no PyTorch twin for model {config.model.name!r}")
  optimizer = torch.optim.Adam(module.parameters(), lr=config.learning_rate, eps=1e-8,
                               foreach=foreach)
  schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(config))

  def train_step(images):
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(module, images)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(module.parameters(), config.grad_clip_norm, foreach=foreach)
    optimizer.step()
    schedule.step()
    return loss.detach()

  return module, train_step


def num_parameters(module) -> int:
  return sum(p.numel() for p in module.parameters())


def load_flax_params(module, params):
  """Copies Flax parameters into the twin (HWIO -> OIHW, (in, out) -> (out, in))."""
  def conv(torch_conv, flax_conv):
    torch_conv.weight.data = torch.tensor(flax_conv["kernel"]).permute(3, 2, 0, 1).contiguous()
    torch_conv.bias.data = torch.tensor(flax_conv["bias"])

  def dense(torch_linear, flax_dense):
    torch_linear.weight.data = torch.tensor(flax_dense["kernel"]).T.contiguous()
    torch_linear.bias.data = torch.tensor(flax_dense["bias"])

  for i, c in enumerate(module.encoder.convs):
    conv(c, params["Encoder_0"][f"ConvBlock_{i}"]["Conv_0"])
  dense(module.bottleneck, params["Bottleneck_0"]["Dense_0"])
  dense(module.from_latent, params["FromLatent_0"]["Dense_0"])
  for i, c in enumerate(module.decoder.convs):
    conv(c, params["Decoder_0"][f"Upsample_{i}"]["ConvBlock_0"]["Conv_0"])
  conv(module.decoder.out, params["Decoder_0"]["Conv_0"])
