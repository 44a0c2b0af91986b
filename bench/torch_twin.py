"""PyTorch twins of the default AE and VAE and of the denoising U-Net, for the training benchmark.

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

`create(config, fused_upsample=True)` computes each resize + conv as the JAX
models do (`kernels.upsample_conv`: one 2x2 convolution with four times the
outputs, then a pixel shuffle): the same rewrite in both frameworks, to tell
the framework's share of the speed from the rewrite's.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

FUSED_UPSAMPLE = False  # set by create(); read by upsample_conv


def _fold_taps(weight, dim):
  """As `kernels._fold_taps` (OIHW): the 3 taps as seen by output rows 2i-1 and 2i."""
  w0, w1, w2 = weight.split(1, dim)
  return torch.cat([w0 + w1, w2], dim), torch.cat([w0, w1 + w2], dim)


def upsample_conv(x, weight, bias):
  """conv3x3_same(nearest_2x(x)): plainly, or (FUSED_UPSAMPLE) as `kernels.upsample_conv`."""
  if not FUSED_UPSAMPLE:
    return F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), weight, bias, padding=1)
  out = weight.shape[0]
  phases = [c for r in _fold_taps(weight, 2) for c in _fold_taps(r, 3)]  # each (O, I, 2, 2)
  # pixel_shuffle wants channel o * 4 + (row parity) * 2 + (column parity).
  kernel = torch.stack(phases, dim=1).reshape(4 * out, weight.shape[1], 2, 2)
  y = F.pixel_shuffle(F.conv2d(F.pad(x, (1, 1, 1, 1)), kernel), 2)[:, :, 1:-1, 1:-1]
  return y + bias[None, :, None, None]


def standardized(weight):
  mean = weight.mean(dim=(1, 2, 3), keepdim=True)
  std = weight.std(dim=(1, 2, 3), keepdim=True, unbiased=False) + 1e-5
  return (weight - mean) / std


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
      z = F.leaky_relu(upsample_conv(z, conv.weight, conv.bias), 0.2)
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


class StandardizedConv2d(nn.Conv2d):
  """Twin of `models.unet.StandardizedConv`: the kernel standardised per output feature."""

  def forward(self, x):
    return F.conv2d(x, standardized(self.weight), self.bias, padding=self.padding)


class ConvPair(nn.Module):
  """Twin of `models.unet.ConvPair`: twice (standardised 3x3 conv, swish, group norm)."""

  def __init__(self, inputs, features, groups):
    super().__init__()
    self.convs = nn.ModuleList([StandardizedConv2d(inputs, features, 3, padding=1),
                                StandardizedConv2d(features, features, 3, padding=1)])
    self.norms = nn.ModuleList([nn.GroupNorm(groups, features, eps=1e-6) for _ in range(2)])

  def forward(self, x):
    for conv, norm in zip(self.convs, self.norms, strict=True):
      x = norm(F.silu(conv(x)))
    return x


class UNet(nn.Module):
  """Twin of `models.unet.UNet`: avg-pool down, nearest resize + conv up, skips concatenated."""

  def __init__(self, base_width, levels, groups, channels=1):
    super().__init__()
    widths = [base_width * 2 ** level for level in range(levels)]
    self.down = nn.ModuleList(ConvPair(i, o, groups)
                              for i, o in zip([channels, *widths[:-1]], widths, strict=True))
    self.up_convs = nn.ModuleList(StandardizedConv2d(widths[i + 1], widths[i], 3, padding=1)
                                  for i in reversed(range(levels - 1)))
    self.up_pairs = nn.ModuleList(ConvPair(2 * widths[i], widths[i], groups)
                                  for i in reversed(range(levels - 1)))
    self.out = nn.Conv2d(widths[0], channels, 1)

  def forward(self, x):
    skips = []
    for level, pair in enumerate(self.down):
      if level:
        x = F.avg_pool2d(x, 2)
      x = pair(x)
      skips.append(x)
    for conv, pair, skip in zip(self.up_convs, self.up_pairs, reversed(skips[:-1]), strict=True):
      x = upsample_conv(x, standardized(conv.weight), conv.bias)
      x = pair(torch.cat([x, skip], dim=1))
    return self.out(x)


def shifted_coarse_noise(shape, noise_std, noise_resolution):
  """As `models.unet_dae.shifted_coarse_noise`: Gaussian noise on a coarse grid, bilinearly
  upsampled, a window at a random offset per slice (NCHW)."""
  b, c, h, w = shape
  cell_h, cell_w = -(-h // noise_resolution), -(-w // noise_resolution)
  grid = torch.randn(b, c, noise_resolution + 1, noise_resolution + 1) * noise_std
  noise = F.interpolate(grid, size=(h + cell_h, w + cell_w), mode="bilinear",
                        align_corners=False)
  rows, cols = torch.randint(0, cell_h, (b,)), torch.randint(0, cell_w, (b,))
  return torch.stack([noise[i, :, r:r + h, q:q + w]
                      for i, (r, q) in enumerate(zip(rows.tolist(), cols.tolist(), strict=True))])


def unet_dae_loss(module, images, brain_mask, noise_std, noise_resolution):
  """As `models.unet_dae.loss_fn`: the slice noised inside its brain, squared error there."""
  noise = shifted_coarse_noise(images.shape, noise_std, noise_resolution)
  recon = module(images + torch.where(brain_mask, noise, 0.0))
  return torch.where(brain_mask, torch.square(recon - images), 0.0).mean()


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


def create(config, foreach=True, fused_upsample=False, compiled=False):
  """(module, train_step) for an experiment config; train_step(images NCHW, brain mask NCHW)
  -> loss tensor (the autoencoders ignore the mask, as their JAX losses do).

  `foreach=True` is PyTorch's multi-tensor Adam, its fastest eager optimiser on
  CPU: the twin gets the best settings a PyTorch user would pick.
  `compiled=True` is what a PyTorch user turns on for speed: `torch.compile`
  (inductor, its default backend) of the loss, so the forward pass and, through
  AOTAutograd, the backward pass run as generated C++ kernels; the optimiser
  step stays the multi-tensor one.
  """
  global FUSED_UPSAMPLE
  FUSED_UPSAMPLE = fused_upsample
  resolution = config.dataset.resolution
  if config.model.name == "unet_dae":
    m = config.model
    module = UNet(m.base_width, m.levels, m.norm_groups)
    loss_fn = lambda mod, x, brain: unet_dae_loss(mod, x, brain, m.noise_std, m.noise_resolution)
  elif config.model.name == "ae":
    channels, latent = tuple(config.model.channels), config.model.latent_dim
    module = AutoEncoder(channels, latent, resolution)
    loss_fn = lambda mod, x, brain: ae_loss(mod, x)
  elif config.model.name == "vae":
    channels, latent = tuple(config.model.channels), config.model.latent_dim
    module = VariationalAutoEncoder(channels, latent, resolution)
    loss_fn = lambda mod, x, brain: vae_loss(mod, x, config.model.kl_weight)
  else:
    raise ValueError(f"no PyTorch twin for model {config.model.name!r}")
  if compiled:
    loss_fn = torch.compile(loss_fn)
  # Adam, or AMSGrad, with L2 weight decay added to the gradient (make_optimizer's chain).
  optimizer = torch.optim.Adam(module.parameters(), lr=config.learning_rate, eps=1e-8,
                               amsgrad=config.optimizer == "amsgrad",
                               weight_decay=config.weight_decay, foreach=foreach)
  schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(config))

  def train_step(images, brain_mask=None):
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(module, images, brain_mask)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(module.parameters(), config.grad_clip_norm, foreach=foreach)
    optimizer.step()
    schedule.step()
    return loss.detach()

  return module, train_step


def num_parameters(module) -> int:
  return sum(p.numel() for p in module.parameters())


def _load_conv(torch_conv, flax_conv):
  torch_conv.weight.data = torch.tensor(flax_conv["kernel"]).permute(3, 2, 0, 1).contiguous()
  torch_conv.bias.data = torch.tensor(flax_conv["bias"])


def load_flax_unet_params(module, params):
  """Copies the Flax U-Net's parameters into the twin."""
  def pair(torch_pair, flax_pair):
    for i in range(2):
      _load_conv(torch_pair.convs[i], flax_pair[f"StandardizedConv_{i}"])
      torch_pair.norms[i].weight.data = torch.tensor(flax_pair[f"GroupNorm_{i}"]["scale"])
      torch_pair.norms[i].bias.data = torch.tensor(flax_pair[f"GroupNorm_{i}"]["bias"])

  for i, p in enumerate(module.down):
    pair(p, params[f"ConvPair_{i}"])
  for i, (conv, p) in enumerate(zip(module.up_convs, module.up_pairs, strict=True)):
    _load_conv(conv, params[f"Up_{i}"]["StandardizedConv_0"])
    pair(p, params[f"Up_{i}"]["ConvPair_0"])
  _load_conv(module.out, params["Conv_0"])


def load_flax_params(module, params):
  """Copies Flax parameters into the twin (HWIO -> OIHW, (in, out) -> (out, in))."""
  if isinstance(module, UNet):
    return load_flax_unet_params(module, params)
  conv = _load_conv

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
