"""Per-model defaults of `phyx generate` match upstream (Wan2.2 / LingBot-World configs, diffusers'
Cosmos pipelines), and Cosmos3 prompts are formatted as diffusers' Cosmos3OmniPipeline does.
Nothing here loads model weights."""
from __future__ import annotations

import inspect
import json
import warnings
from types import SimpleNamespace

import pytest

from phyx.pipelines import prompts, registry, text
from phyx.pipelines.generate import GenerateArgs, resolve_settings


def _settings(model: str, task: str | None = None, **kw):
    spec = registry.get_spec(model)
    return spec.for_task(task or spec.default_task()), resolve_settings(spec, task or spec.default_task(),
                                                                        GenerateArgs(model=model, **kw))


# name, task, steps, shift, (guidance low, high), frames, (height, width), fps, boundary, negative prompt
UPSTREAM = [
    ("wan2.2-t2v-a14b", "t2v", 40, 12.0, (3.0, 4.0), 81, (720, 1280), 16.0, 0.875, prompts.WAN_NEGATIVE_PROMPT),
    ("wan2.2-i2v-a14b", "i2v", 40, 5.0, (3.5, 3.5), 81, (720, 1280), 16.0, 0.900, prompts.WAN_NEGATIVE_PROMPT),
    ("wan2.2-ti2v-5b", "t2v", 50, 5.0, (5.0, None), 121, (704, 1280), 24.0, None, prompts.WAN_NEGATIVE_PROMPT),
    ("lingbot-world", "i2v", 70, 10.0, (5.0, 5.0), 81, (720, 1280), 16.0, 0.947, prompts.LINGBOT_NEGATIVE_PROMPT),
    ("cosmos-predict2-2b", "t2i", 35, 1.0, (7.0, None), 1, (768, 1360), 16.0, None,
     prompts.COSMOS_PREDICT2_NEGATIVE_PROMPT),
    ("cosmos-predict2-14b", "v2w", 35, 1.0, (7.0, None), 93, (704, 1280), 16.0, None,
     prompts.COSMOS_PREDICT2_NEGATIVE_PROMPT),
    ("cosmos3-nano", "t2v", 35, 5.0, (6.0, None), 189, (720, 1280), 24.0, None, ""),
]


@pytest.mark.parametrize("model, task, steps, shift, guidance, frames, hw, fps, boundary, neg", UPSTREAM)
def test_real_model_defaults_are_upstream(model, task, steps, shift, guidance, frames, hw, fps, boundary, neg):
    spec, st = _settings(model, task)
    assert (st.steps, st.shift, (st.guidance, st.guidance_high)) == (steps, shift, guidance)
    assert (st.frames, (st.height, st.width), st.fps) == (frames, hw, fps)
    assert spec.boundary == boundary and st.negative_prompt == neg


def test_command_line_overrides_defaults():
    _, st = _settings("wan2.2-t2v-a14b", negative_prompt="", steps=4, shift=3.0, guidance=2.0)
    assert (st.negative_prompt, st.steps, st.shift) == ("", 4, 3.0)
    assert (st.guidance, st.guidance_high) == (2.0, 2.0)  # one --guidance sets both experts
    _, st = _settings("wan2.2-t2v-a14b", guidance=2.0, guidance_high=6.0)
    assert (st.guidance, st.guidance_high) == (2.0, 6.0)


@pytest.mark.parametrize("model", [n for n in registry.names() if registry.SPECS[n].tiny])
def test_tiny_models_keep_toy_settings(model):
    spec, st = _settings(model)
    assert st.negative_prompt == "" and spec.boundary is None and not spec.task_defaults
    assert (st.height, st.width) == (64, 64) and st.steps == 6


def test_wan_and_lingbot_negative_prompts_are_related_as_upstream():
    # LingBot-World's prompt extends Wan2.2's shared one: one more item in front, more behind
    wan, lingbot = prompts.WAN_NEGATIVE_PROMPT, prompts.LINGBOT_NEGATIVE_PROMPT
    assert lingbot.startswith("画面突变，" + wan + "，") and lingbot.endswith("汽车，电线")
    assert len(wan.split("，")) == 28 and len(lingbot.split("，")) == 57
    # sha256 of the strings as fetched from Wan2.2 shared_config.py / LingBot-World wan_i2v_A14B.py
    import hashlib
    assert hashlib.sha256(wan.encode()).hexdigest().startswith("ce96e0324e4b54ce")
    assert hashlib.sha256(lingbot.encode()).hexdigest().startswith("35d64b590ae347df")


def test_cosmos_predict2_defaults_follow_the_diffusers_pipelines():
    from diffusers.pipelines.cosmos import pipeline_cosmos2_text2image as t2i
    from diffusers.pipelines.cosmos import pipeline_cosmos2_video2world as v2w

    assert prompts.COSMOS_PREDICT2_NEGATIVE_PROMPT == t2i.DEFAULT_NEGATIVE_PROMPT == v2w.DEFAULT_NEGATIVE_PROMPT
    for mod, cls, task in ((t2i, "Cosmos2TextToImagePipeline", "t2i"), (v2w, "Cosmos2VideoToWorldPipeline", "v2w")):
        p = inspect.signature(getattr(mod, cls).__call__).parameters
        _, st = _settings("cosmos-predict2-2b", task)
        assert (st.height, st.width) == (p["height"].default, p["width"].default)
        assert (st.steps, st.guidance) == (p["num_inference_steps"].default, p["guidance_scale"].default)
        if task == "v2w":
            assert (st.frames, st.fps) == (p["num_frames"].default, p["fps"].default)


def test_cosmos3_defaults_follow_the_diffusers_pipeline():
    from diffusers.pipelines.cosmos.pipeline_cosmos3_omni import Cosmos3OmniPipeline

    p = inspect.signature(Cosmos3OmniPipeline.__call__).parameters
    _, st = _settings("cosmos3-nano")
    assert (st.steps, st.guidance, st.fps) == (p["num_inference_steps"].default, p["guidance_scale"].default,
                                               p["fps"].default)
    body = inspect.getsource(Cosmos3OmniPipeline.__call__)  # None -> defaults set in the body
    for line in (f"num_frames = {st.frames}", f"height = {st.height}", f"width = {st.width}"):
        assert line in body


def test_cosmos3_checkpoint_shift(tmp_path):
    from phyx.pipelines.families import cosmos3

    assert cosmos3.checkpoint_shift(tmp_path) is None
    (tmp_path / "scheduler").mkdir()
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps({"flow_shift": 3.5}))
    assert cosmos3.checkpoint_shift(tmp_path) == 3.5


# ---- Cosmos3 prompt formatting ----------------------------------------------------------------
_CHAT = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _byte_level_tokenizer(directory, chat_template: str | None):
    """A lossless byte-level tokenizer (no merges) with Qwen's special tokens, saved locally."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>"]
    vocab = {t: i for i, t in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>", additional_special_tokens=specials[1:])
    if chat_template:
        tok.chat_template = chat_template
    tok.save_pretrained(str(directory))
    return text.load_tokenizer(directory)


def test_cosmos3_templates_text():
    t = prompts.cosmos3_template_text("a red ball.", 17, 64, 96, 16.0)
    assert t == "a red ball. The video is 1.1 seconds long and is of 16 FPS. This video is of 64x96 resolution."
    n = prompts.cosmos3_template_text("", 17, 64, 96, 16.0, negative=True)
    assert n == "The video is not 1.1 seconds long and is not of 16 FPS. This video is not of 64x96 resolution."
    assert prompts.cosmos3_template_text("x", 1, 64, 96, 16.0) == "x. This image is of 64x96 resolution."


@pytest.mark.parametrize("frames, negative", [(17, None), (1, "blurry, static")])
def test_cosmos3_prompt_ids_equal_diffusers(tmp_path, frames, negative):
    from diffusers import UniPCMultistepScheduler
    from diffusers.pipelines.cosmos.pipeline_cosmos3_omni import Cosmos3OmniPipeline

    from phyx.pipelines import vae as vae_mod

    tok = _byte_level_tokenizer(tmp_path, _CHAT)
    pipe = Cosmos3OmniPipeline(transformer=None, text_tokenizer=tok.tok, vae=vae_mod.build_tiny_vae("wan2.2", z_dim=4),
                               scheduler=UniPCMultistepScheduler(), enable_safety_checker=False)
    want = pipe.tokenize_prompt("a red ball rolls", negative, num_frames=frames, height=64, width=96, fps=16.0)
    got = prompts.cosmos3_prompt_ids(tok.tok, "a red ball rolls", negative, frames, 64, 96, 16.0)
    assert got == want
    assert tok.tok.decode(got[0]).endswith("<|im_start|>assistant\n<|endoftext|><|vision_start|>")

    # the family module picks this path for a real tokenizer, the raw bytes for the tiny one
    from phyx.pipelines.families import cosmos3

    run = SimpleNamespace(prompt="a red ball rolls", negative_prompt=negative or "", frames=frames, height=64,
                          width=96, fps=16.0)
    cond, uncond = cosmos3.prompt_ids(tok, run)
    assert (cond.tolist(), uncond.tolist()) == want
    cond_b, _ = cosmos3.prompt_ids(text.ByteTokenizer(), run)
    assert cond_b.tolist() == [b + 3 for b in b"a red ball rolls"] + [text.ByteTokenizer.eos_token_id]


def test_cosmos3_without_chat_template_warns_and_falls_back(tmp_path):
    tok = _byte_level_tokenizer(tmp_path, None)
    with pytest.warns(UserWarning, match="no chat template"):
        cond, _ = prompts.cosmos3_prompt_ids(tok.tok, "a red ball", "", 17, 64, 96, 16.0)
    plain = tok.tok(prompts.cosmos3_template_text("a red ball", 17, 64, 96, 16.0), add_special_tokens=False)
    assert cond == plain["input_ids"] + [tok.tok.eos_token_id, tok.tok.convert_tokens_to_ids("<|vision_start|>")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the chat-template path is silent
        prompts.cosmos3_prompt_ids(_byte_level_tokenizer(tmp_path / "chat", _CHAT).tok, "x", "", 17, 64, 96, 16.0)


@pytest.mark.parametrize("model, boundary", [("wan2.2-t2v-a14b", 0.875), ("wan2.2-i2v-a14b", 0.900),
                                             ("lingbot-world", 0.947), ("tiny-wan-a14b", None)])
def test_wan_expert_boundary_reaches_the_loader(monkeypatch, tmp_path, model, boundary):
    import phyx.models.wan as wan_models
    from phyx.pipelines.families import wan

    seen = {}

    def fake_load(path, **kw):
        seen.update(kw)
        return SimpleNamespace(expert_for=None)  # looks like the expert pair

    monkeypatch.setattr(wan_models, "load_wan", fake_load)
    wan.load_dit(tmp_path, registry.get_spec(model), None, "cpu")
    assert seen["boundary"] == boundary  # None: the checkpoint's own (model_index.json / loader default)
