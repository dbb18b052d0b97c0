"""Cosmos3 (omni: text -> video, image -> video, text -> audio + video) in the pipeline.

The DiT reads token ids (its understanding tower encodes the prompt once per CFG branch, cached
for every step: phyx.models.cosmos3.guidance), vision latents [C, T, H, W] from the Wan2.2 VAE
and, for t2av, sound latents [C_s, T_s] decoded to a waveform by diffusers'
Cosmos3AVAEAudioTokenizer. Sampler: flow UniPC, one scheduler instance per modality (UniPC keeps
per-step history). i2v: the first latent frame is the clean image latent and is not a noisy
frame. Guidance is uncond + g (cond - uncond) per modality.
"""
from __future__ import annotations

from pathlib import Path

import torch

from phyx.errors import CheckpointError
from phyx.pipelines import noise as noise_mod
from phyx.pipelines import prompts, protocol, schedulers
from phyx.pipelines import text as text_mod
from phyx.pipelines import vae as vae_mod

# The DiT pads latents up to its 2x2 patch (as diffusers' Cosmos3OmniTransformer does), so sizes
# need only be multiples of the VAE stride (pipeline_cosmos3_omni.check_inputs); hence patch 1 here.
PATCH = (1, 1, 1)


def required_parts(ckpt: Path, spec) -> list[tuple[Path, str]]:
    return [(ckpt / "transformer", "the Cosmos3 DiT (diffusers Cosmos3OmniTransformer layout)"),
            (ckpt / "vae", "the Wan2.2 VAE (diffusers AutoencoderKLWan)"),
            (ckpt / "tokenizer", "the Qwen tokenizer files")]


def load_dit(ckpt: Path, spec, dtype, device):
    from phyx.models.cosmos3 import load

    return load(ckpt / "transformer", dtype=dtype, device=device)


def load_sound_decoder(ckpt: Path, device):
    from diffusers.models.autoencoders.autoencoder_cosmos3_audio import Cosmos3AVAEAudioTokenizer

    path = ckpt / "sound_tokenizer"
    if not (path / "config.json").exists():
        raise CheckpointError(f"--sound needs the sound decoder in {path} (diffusers Cosmos3AVAEAudioTokenizer)")
    return Cosmos3AVAEAudioTokenizer.from_pretrained(str(path), use_safetensors=True).to(device).eval()


def checkpoint_shift(ckpt: Path) -> float | None:
    """flow_shift of the checkpoint's scheduler (diffusers' Cosmos3 pipeline takes its UniPC
    scheduler, shift included, from scheduler/scheduler_config.json); None when absent."""
    cfg = Path(ckpt) / "scheduler" / "scheduler_config.json"
    if not cfg.is_file():
        return None
    from phyx.errors import ConfigError
    from phyx.io import untrusted as U

    shift = U.read_json(cfg, "scheduler config", ConfigError).get("flow_shift")
    if shift is not None:
        U.check_value("flow_shift", shift, "float", f"scheduler config {cfg}", ConfigError)
    return float(shift) if shift is not None else None


def _byte_ids(tok, prompt: str, max_len: int = 512) -> torch.Tensor:
    ids, mask = tok([prompt], max_len)
    return ids[0, : int(mask[0].sum())]


def prompt_ids(tok, run) -> tuple[torch.Tensor, torch.Tensor]:
    """(cond, uncond) token ids. A real (Qwen) tokenizer gets diffusers' Cosmos3 formatting:
    duration / resolution sentences (inverse ones on the negative prompt) inside the chat
    template, then eos + <|vision_start|>; the tiny models' byte tokenizer reads the raw text."""
    if isinstance(tok, text_mod.HFTokenizer):
        cond, uncond = prompts.cosmos3_prompt_ids(tok.tok, run.prompt, run.negative_prompt, run.frames,
                                                  run.height, run.width, run.fps)
        return torch.tensor(cond, dtype=torch.long), torch.tensor(uncond, dtype=torch.long)
    return _byte_ids(tok, run.prompt), _byte_ids(tok, run.negative_prompt)


class Denoiser(protocol.Denoiser):
    def __init__(self, run, model):
        self.run, self.model = run, model
        cfg = model.config
        self.cfg = cfg
        if run.vae.config.z_dim != cfg.latent_channel:
            raise CheckpointError(f"the VAE has {run.vae.config.z_dim} latent channels but the DiT expects "
                                  f"{cfg.latent_channel}")
        if run.task == "t2av" and not cfg.sound_gen:
            raise CheckpointError("this Cosmos3 checkpoint has no sound heads (sound_gen=False); drop --sound")
        tok = text_mod.load_tokenizer(run.checkpoint / "tokenizer")
        self.cond_ids, self.uncond_ids = prompt_ids(tok, run)
        if int(max(self.cond_ids.max(), self.uncond_ids.max())) >= cfg.vocab_size:
            raise CheckpointError(f"token ids exceed the model's vocabulary ({cfg.vocab_size}): the tokenizer "
                                  f"does not belong to this checkpoint")
        from phyx.models.cosmos3.guidance import BranchCaches
        self.caches = BranchCaches()
        T = run.latent_shape[2]
        self.first = None
        self.noisy = torch.arange(T)
        if run.task == "i2v":
            self.first = vae_mod.encode(run.vae, run.cond_pixels[:, :1].unsqueeze(0).to(run.device))
            self.noisy = torch.arange(1, T)
        self.sound = self.sound_sampler = self.sound_v = None
        if run.task == "t2av":
            ts = max(1, round(run.frames / run.fps * cfg.sound_latent_fps))
            self.sound = noise_mod.cpu_noise((cfg.sound_dim, ts), run.seed, device=run.device, offset=1)
            self.sound_sampler = schedulers.make_sampler(run.sampler.kind, run.steps, run.shift)

    def init_latents(self, noise):
        return self._impose(noise)

    def _impose(self, x):
        if self.first is None:
            return x
        x = x.clone()
        x[:, :, :1] = self.first
        return x

    def predict(self, x, i):
        from phyx.models.cosmos3.guidance import guided_step

        t = torch.tensor(float(self.run.sampler.model_timestep(i)))
        media = {"vision": x[0], "vision_timesteps": t, "vision_noisy_frames": self.noisy}
        if self.sound is not None:
            media.update(sound=self.sound, sound_timesteps=t)
        out = guided_step(self.model, media, self.cond_ids, self.uncond_ids, self.run.guidance,
                          caches=self.caches, fps=self.run.fps)
        self.sound_v = out["sound"]
        return out["vision"].float()

    def step(self, v, i, x):
        if self.sound is not None:
            self.sound = self.sound_sampler.step(self.sound_v[None], i, self.sound[None])[0]
        return self._impose(self.run.sampler.step(v, i, x))

    def final(self, x):
        return x

    def extra_outputs(self) -> dict:
        """{'wav': (waveform [channels, samples], sample_rate)} for t2av."""
        if self.sound is None:
            return {}
        dec = load_sound_decoder(self.run.checkpoint, self.run.device)
        with torch.no_grad():
            wav = dec.decode(self.sound.float())
        return {"wav": (wav.float().cpu(), int(dec.config.sampling_rate))}

    def describe(self) -> dict:
        return {"conditioning": self.run.task, "text_tokens": int(self.cond_ids.numel()),
                "sound_latent_shape": list(self.sound.shape) if self.sound is not None else None,
                "guidance_form": "uncond + g * (cond - uncond)"}
