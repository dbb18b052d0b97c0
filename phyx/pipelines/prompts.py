"""Upstream prompt conventions: default negative prompts and Cosmos3's prompt formatting.

The real models were trained (and are evaluated upstream) with these strings, so `phyx generate`
uses them when --negative-prompt is not given. Tiny models keep "" (their byte tokenizer and
toy text length gain nothing from a long prompt).
"""
from __future__ import annotations

import warnings

# Wan2.2 wan/configs/shared_config.py `sample_neg_prompt` (shared by t2v-A14B, i2v-A14B, ti2v-5B).
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，"
    "丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，"
    "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)

# LingBot-World wan/configs/wan_i2v_A14B.py `sample_neg_prompt` (overrides the shared one).
LINGBOT_NEGATIVE_PROMPT = (
    "画面突变，色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，"
    "手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走，镜头晃动，画面闪烁，模糊，噪点，水印，签名，"
    "文字，变形，扭曲，液化，不合逻辑的结构，卡顿，PPT幻灯片感，过暗，欠曝，低对比度，霓虹灯光感，过度锐化，"
    "3D渲染感，人物，行人，游客，身体，皮肤，肢体，面部特征，汽车，电线"
)

# diffusers pipelines/cosmos/pipeline_cosmos2_text2image.py and pipeline_cosmos2_video2world.py
# `DEFAULT_NEGATIVE_PROMPT` (the same string in both).
COSMOS_PREDICT2_NEGATIVE_PROMPT = (
    "The video captures a series of frames showing ugly scenes, static with no motion, motion blur, "
    "over-saturation, shaky footage, low resolution, grainy texture, pixelated images, poorly lit areas, "
    "underexposed and overexposed scenes, poor color balance, washed out colors, choppy sequences, "
    "jerky movements, low frame rate, artifacting, color banding, unnatural transitions, outdated special effects, "
    "fake elements, unconvincing visuals, poorly edited content, jump cuts, visual noise, and flickering. "
    "Overall, the video is of poor quality."
)

# ---- Cosmos3 (diffusers pipelines/cosmos/pipeline_cosmos3_omni.py, Cosmos3OmniPipeline) -------------
# The pipeline has no default negative prompt ("" when None). Metadata sentences are appended to
# the prompt, their inverses to the negative prompt, then both go through the Qwen chat template.
COSMOS3_SYSTEM_PROMPT_IMAGE = "You are a helpful assistant who will generate images from a give prompt."
COSMOS3_SYSTEM_PROMPT_VIDEO = "You are a helpful assistant who will generate videos from a give prompt."
COSMOS3_DURATION = "The video is {duration:.1f} seconds long and is of {fps:.0f} FPS."
COSMOS3_IMAGE_RESOLUTION = "This image is of {height}x{width} resolution."
COSMOS3_VIDEO_RESOLUTION = "This video is of {height}x{width} resolution."
COSMOS3_INVERSE_DURATION = "The video is not {duration:.1f} seconds long and is not of {fps:.0f} FPS."
COSMOS3_INVERSE_IMAGE_RESOLUTION = "This image is not of {height}x{width} resolution."
COSMOS3_INVERSE_VIDEO_RESOLUTION = "This video is not of {height}x{width} resolution."
COSMOS3_START_OF_GENERATION = "<|vision_start|>"


def _append(base: str, addition: str) -> str:
    base = base.rstrip(".")
    return f"{base}. {addition}" if base else addition


def cosmos3_template_text(text: str, frames: int, height: int, width: int, fps: float,
                          negative: bool = False, add_duration: bool = True, add_resolution: bool = True) -> str:
    """The prompt with Cosmos3's duration / resolution sentences appended (inverse ones for the
    negative prompt); an image (frames == 1) gets no duration sentence."""
    is_image = frames == 1
    if not is_image and add_duration:
        tpl = COSMOS3_INVERSE_DURATION if negative else COSMOS3_DURATION
        text = _append(text, tpl.format(duration=frames / fps, fps=fps))
    if add_resolution:
        if is_image:
            tpl = COSMOS3_INVERSE_IMAGE_RESOLUTION if negative else COSMOS3_IMAGE_RESOLUTION
        else:
            tpl = COSMOS3_INVERSE_VIDEO_RESOLUTION if negative else COSMOS3_VIDEO_RESOLUTION
        text = _append(text, tpl.format(height=height, width=width))
    return text


def _special_id(tok, token: str) -> int | None:
    tid = tok.convert_tokens_to_ids(token)
    if tid is None or (tok.unk_token_id is not None and tid == tok.unk_token_id):
        return None
    return int(tid)


def cosmos3_token_ids(hf_tokenizer, text: str, is_image: bool, use_system_prompt: bool = True) -> list[int]:
    """Token ids of one (already templated) Cosmos3 prompt, as Cosmos3OmniPipeline.tokenize_prompt
    builds them: chat template (optional system turn, user turn, generation prompt), then
    eos and <|vision_start|>. A tokenizer without a chat template falls back, with a warning, to
    plain tokenisation of the text (the model then sees a prompt format it was not trained on)."""
    if getattr(hf_tokenizer, "chat_template", None):
        conv = []
        if use_system_prompt:
            conv.append({"role": "system",
                         "content": COSMOS3_SYSTEM_PROMPT_IMAGE if is_image else COSMOS3_SYSTEM_PROMPT_VIDEO})
        conv.append({"role": "user", "content": text})
        enc = hf_tokenizer.apply_chat_template(conv, tokenize=True, add_generation_prompt=True,
                                               add_vision_id=False, return_dict=True)
        ids = list(enc["input_ids"])
    else:
        warnings.warn("the Cosmos3 tokenizer has no chat template (tokenizer_config.json 'chat_template' or "
                      "chat_template.jinja): tokenising the prompt without it, which differs from the format "
                      "Cosmos3 was trained on; use the checkpoint's Qwen tokenizer files", stacklevel=2)
        ids = list(hf_tokenizer(text, add_special_tokens=False)["input_ids"])
    tail = [hf_tokenizer.eos_token_id, _special_id(hf_tokenizer, COSMOS3_START_OF_GENERATION)]
    if tail[1] is None:
        warnings.warn(f"the Cosmos3 tokenizer has no {COSMOS3_START_OF_GENERATION} token: the prompt ends "
                      f"without the start-of-generation marker", stacklevel=2)
    return ids + [int(t) for t in tail if t is not None]


def cosmos3_prompt_ids(hf_tokenizer, prompt: str, negative_prompt: str | None, frames: int, height: int,
                       width: int, fps: float, use_system_prompt: bool = True) -> tuple[list[int], list[int]]:
    """(cond ids, uncond ids) for Cosmos3 t2v / i2v / t2av (diffusers' tokenize_prompt without
    the action mode)."""
    is_image = frames == 1
    cond = cosmos3_template_text(prompt, frames, height, width, fps)
    uncond = cosmos3_template_text(negative_prompt or "", frames, height, width, fps, negative=True)
    return (cosmos3_token_ids(hf_tokenizer, cond, is_image, use_system_prompt),
            cosmos3_token_ids(hf_tokenizer, uncond, is_image, use_system_prompt))
