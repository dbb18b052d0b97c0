"""Cosmos-Predict2 rectified-flow preconditioning, Text2Image / Video2World denoising and the
training loss, as functions of (model, tensors) so every backend runs the same math.

Noise level sigma (EDM convention) maps to the rectified-flow time t = sigma / (sigma + 1):
    c_skip = 1 - t,  c_out = -t,  c_in = 1 - t,  c_noise = t
    x0_pred = c_skip * x_t + c_out * net(c_in * x_t, c_noise)
Video2World: the first conditional latent frames enter the network clean (replaced by the
conditioning latents, not scaled by c_in), marked by the condition-mask channel, with their own
small sigma (sigma_conditioning = 1e-4); their x0 prediction is replaced by the conditioning.
Training (NVIDIA cosmos-predict2): sigma = exp(N(0, 1)) per sample, x_t = x0 + sigma * eps,
loss = loss_scale * mean(w(sigma) * (x0 - x0_pred)^2) with w = (sigma^2 + sd^2) / (sigma * sd)^2.
"""
from __future__ import annotations

import torch

SIGMA_CONDITIONING = 1e-4
SIGMA_DATA = 1.0
LOSS_SCALE = 10.0


def rf_scaling(sigma: torch.Tensor):
    """(c_skip, c_out, c_in, c_noise) for noise level sigma."""
    t = sigma / (sigma + 1)
    return 1 - t, -t, 1 - t, t


def _frames(v: torch.Tensor, B: int, T: int) -> torch.Tensor:
    """Scalar, [B] or [B, T] -> [B, 1, T, 1, 1]."""
    v = torch.as_tensor(v)
    if v.dim() == 0:
        v = v.expand(B)
    if v.dim() == 1:
        v = v[:, None].expand(B, T)
    return v.reshape(B, 1, T, 1, 1)


def condition_indicator(num_frames: int, num_conditional_frames: int, device=None, dtype=torch.float32):
    """[1, 1, T, 1, 1]: 1 on the leading conditional latent frames (Video2World), 0 elsewhere."""
    ind = torch.zeros(1, 1, num_frames, 1, 1, device=device, dtype=dtype)
    ind[:, :, :num_conditional_frames] = 1.0
    return ind


def denoise(model, x_t, sigma, text, *, cond_latents=None, num_conditional_frames: int = 0,
            sigma_conditioning: float = SIGMA_CONDITIONING, fps=None, padding_mask=None, text_mask=None):
    """x0 prediction for x_t [B, C, T, H, W] at noise level sigma (scalar, [B] or [B, T]).

    Text2Image / Text2World: leave cond_latents None. Video2World: cond_latents [B, C, T, H, W]
    (only the first num_conditional_frames frames are read)."""
    B, C, T, H, W = x_t.shape
    dtype = next(model.parameters()).dtype
    s = _frames(sigma, B, T).to(device=x_t.device, dtype=torch.float32)
    c_skip, c_out, c_in, c_noise = rf_scaling(s)
    net_in = x_t.float() * c_in
    timestep = c_noise
    cond_mask = None
    ind = None
    if model.config.video2world:
        ind = condition_indicator(T, num_conditional_frames if cond_latents is not None else 0, x_t.device)
        if cond_latents is not None:
            net_in = ind * cond_latents.float() + (1 - ind) * net_in
        t_cond = torch.tensor(sigma_conditioning, dtype=torch.float32)
        t_cond = t_cond / (t_cond + 1)
        timestep = ind * t_cond.to(x_t.device) + (1 - ind) * timestep
        cond_mask = ind.expand(B, 1, T, H, W).to(dtype)
    elif cond_latents is not None:
        raise ValueError("cond_latents given to a Text2Image model; Video2World checkpoints take them")
    out = model(net_in.to(dtype), timestep.to(dtype), text, fps=fps, condition_mask=cond_mask,
                padding_mask=padding_mask, text_mask=text_mask)
    x0 = c_skip * x_t.float() + c_out * out.float()
    if ind is not None and cond_latents is not None:
        x0 = ind * cond_latents.float() + (1 - ind) * x0
    return x0


def guided_x0(model, x_t, sigma, text, neg_text, guidance: float, **kw):
    """Classifier-free guidance as Cosmos-Predict2 applies it to x0: cond + g * (cond - uncond).

    Under CFG parallel (cfg = 2) each cfg rank runs one branch and the two are all-gathered;
    with cfg = 1 both run here. Every rank returns the same guided x0."""
    st = _parallel_state()
    if st is None or st.cfg_size == 1:
        x0_c = denoise(model, x_t, sigma, text, **kw)
        if guidance == 0:
            return x0_c
        x0_u = denoise(model, x_t, sigma, neg_text, **kw)
        return x0_c + guidance * (x0_c - x0_u)
    from phyx.parallel import cfg_gather_combine
    local = denoise(model, x_t, sigma, text if st.cfg_rank == 0 else neg_text, **kw)
    # cond + g (cond - uncond) == uncond + (g + 1)(cond - uncond)
    return cfg_gather_combine(local, guidance + 1.0, dim=0)


def _parallel_state():
    from phyx.parallel import get_parallel_state

    return get_parallel_state()


def sample_training_sigma(batch: int, generator: torch.Generator | None = None,
                          multiplier: float = 1.0) -> torch.Tensor:
    """sigma = exp(N(0, 1)) * multiplier, drawn on the host in float64 (identical on every vendor)."""
    z = torch.randn(batch, generator=generator, dtype=torch.float64)
    return torch.exp(z) * multiplier


def loss_weight(sigma: torch.Tensor, sigma_data: float = SIGMA_DATA) -> torch.Tensor:
    return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2


def training_loss(model, x0, text, sigma, noise, *, loss_scale: float = LOSS_SCALE, **denoise_kw):
    """The Cosmos-Predict2 training loss for given x0 [B, C, T, H, W], sigma [B] or [B, T] and
    noise eps (same shape as x0); sample sigma with sample_training_sigma and the noise on the host.

    Returns {'loss', 'mse', 'edm', 'x0_pred', 'x_t'}: loss = loss_scale * mean(w * (x0 - x0_pred)^2)."""
    B, C, T, H, W = x0.shape
    s = _frames(torch.as_tensor(sigma, dtype=torch.float32), B, T).to(x0.device)
    x_t = x0.float() + noise.float() * s
    x0_pred = denoise(model, x_t, s.reshape(B, T), text, **denoise_kw)
    se = (x0.float() - x0_pred) ** 2
    edm = se * loss_weight(s)
    return {"loss": edm.mean() * loss_scale, "mse": se.mean(), "edm": edm.mean(), "x0_pred": x0_pred,
            "x_t": x_t}
