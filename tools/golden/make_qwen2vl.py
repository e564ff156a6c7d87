#!/usr/bin/env python3
"""Golden fixture for relvqa's Qwen2-VL model: a tiny random Qwen2VLForConditionalGeneration run
by Hugging Face transformers, written as a model directory plus the inputs and outputs
`relvqa check-reference` compares against.

The inputs come from transformers' own processor (`Qwen2VLProcessor` with the Pillow image
processor `Qwen2VLImageProcessorPil`: smart_resize to multiples of 28, BICUBIC, CLIP mean/std,
14-pixel patches with temporal patch size 2, flattened) and Qwen2-VL's chat template, so the
committed `input_ids`, `pixel_values` and `image_grid_thw` pin the processor and the prompt too.

Writes OUT/config.json, OUT/model.safetensors (f32), OUT/tokenizer.json (word level, the
Qwen2-VL specials at the end of the vocabulary), OUT/chat_template.json (Qwen2-VL-Instruct's
template), OUT/preprocessor_config.json, OUT/image.png and OUT/golden.safetensors with
input_ids, pixel_values, image_grid_thw, logits and generated.
Needs torch + transformers; runs offline. Not used by the Rust build, the tests or CI.
"""

import argparse
import inspect
import json
import os
import shutil
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers  # noqa: E402
from transformers import (  # noqa: E402
    DynamicCache,
    PreTrainedTokenizerFast,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLProcessor,
)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil  # noqa: E402

# Qwen2-VL-Instruct's chat template (as its chat_template.json ships it).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Special tokens at the END of the vocabulary, as in Qwen2-VL's tokenizer (ids 151643.. there).
SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
VOCAB = 128
SPECIAL_BASE = VOCAB - len(SPECIALS)
WORDS = ["<unk>", "system", "You", "are", "a", "helpful", "assistant", ".", "user", "what", "is", "the", "color", "?"]
WORDS += [f"w{i}" for i in range(SPECIAL_BASE - 1 - len(WORDS))]
NEW_TOKENS = 8


def special_id(tok: str) -> int:
    return SPECIAL_BASE + SPECIALS.index(tok)


def make_config() -> Qwen2VLConfig:
    text = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,  # head_dim 16
        num_key_value_heads=2,  # GQA 2:1 (Qwen2-VL-2B: 12 heads / 2 KV heads)
        max_position_embeddings=256,
        rms_norm_eps=1e-6,
        # Uneven sections as in Qwen2-VL ([16, 24, 24] of head_dim 128): t, h, w; sum = head_dim / 2.
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
        hidden_act="silu",
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=special_id("<|im_end|>"),
        pad_token_id=special_id("<|endoftext|>"),
    )
    vision = dict(
        depth=2,
        embed_dim=32,
        hidden_size=64,  # the merger's output: the text hidden size
        hidden_act="quick_gelu",
        mlp_ratio=2,
        num_heads=2,  # head_dim 16: 2-D rotary over 4 + 4 frequencies
        in_channels=3,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
    )
    return Qwen2VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=special_id("<|image_pad|>"),
        video_token_id=special_id("<|video_pad|>"),
        vision_start_token_id=special_id("<|vision_start|>"),
        vision_end_token_id=special_id("<|vision_end|>"),
        tie_word_embeddings=True,  # Qwen2-VL-2B ties lm_head to the embeddings
    )


def rescale_(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Re-draw every parameter with scales that keep activations O(1) through the tiny net."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ("norm" in name or "ln_q" in name) and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif "embed_tokens" in name:
                p.copy_(0.15 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in**0.5)


def make_tokenizer() -> Tokenizer:
    vocab = {w: i for i, w in enumerate(WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_tokens([AddedToken("\n", normalized=False)])
    tok.add_special_tokens([AddedToken(t, special=True) for t in SPECIALS])
    for i, t in enumerate(SPECIALS):
        assert tok.token_to_id(t) == SPECIAL_BASE + i, (t, tok.token_to_id(t))
    assert tok.get_vocab_size() == VOCAB
    return tok


def raw_image(gen: torch.Generator, width: int, height: int) -> Image.Image:
    small = torch.rand((1, 3, 5, 6), generator=gen)
    big = torch.nn.functional.interpolate(small, size=(height, width), mode="bilinear", align_corners=False)
    arr = (big[0].permute(1, 2, 0) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    return Image.fromarray(arr, "RGB")


def greedy(model, enc, n: int):
    """Greedy decoding with the KV cache, exactly n tokens (no stop at <|im_end|>); the prompt's
    logits too. The decode steps pass no position ids: transformers continues from the cached
    rope delta, which is what relvqa must reproduce."""
    params = inspect.signature(model.forward).parameters
    cache_kw = "cache" if "cache" in params else "past_key_values"
    cache = DynamicCache(config=model.config)
    input_ids = enc["input_ids"]
    out = model(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        pixel_values=enc["pixel_values"],
        image_grid_thw=enc["image_grid_thw"],
        mm_token_type_ids=enc["mm_token_type_ids"],
        use_cache=True,
        **{cache_kw: cache},
    )
    prompt_logits = out.logits
    new = []
    nxt = out.logits[:, -1].argmax(-1)
    for step in range(n):
        new.append(nxt.item())
        if step == n - 1:
            break
        # No attention_mask here: with one, transformers 5.24 derives the M-RoPE positions of
        # the new token from the mask's cumulative sum over all `seen` positions.
        out = model(
            input_ids=nxt[:, None],
            use_cache=True,
            **{cache_kw: cache},
        )
        nxt = out.logits[:, -1].argmax(-1)
    model.model.rope_deltas = None
    ref = model.generate(
        **enc,
        max_new_tokens=n,
        do_sample=False,
    )[0, input_ids.shape[1]:].tolist()
    if ref != new[: len(ref)]:
        raise SystemExit(f"greedy loop {new} disagrees with generate() {ref}")
    return prompt_logits, new


class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
    """Qwen2VLProcessor without a video processor: transformers' video processor needs
    torchvision, which images do not. The image path is Qwen2VLProcessor's own."""

    def check_argument_for_proper_class(self, attribute_name, arg):
        if attribute_name == "video_processor" and arg is None:
            return
        return super().check_argument_for_proper_class(attribute_name, arg)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="fixture directory to (re)write")
    # The committed fixture's seed: its greedy ids change along the 8 steps.
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--question-tokens", type=int, default=6)
    # 100x76 -> smart_resize 112x84 (both sides up, BICUBIC) -> 8x6 patches -> 4x3 = 12 tokens.
    ap.add_argument("--image-size", default="100x76", help="raw image WIDTHxHEIGHT (before the processor)")
    ap.add_argument("--min-pixels", type=int, default=56 * 56)
    ap.add_argument("--max-pixels", type=int, default=28 * 28 * 16)
    # A second image of another size in the same prompt: writes golden-2images.safetensors and
    # image2.png instead of golden.safetensors (the model, tokenizer and first image stay the
    # same bytes: the second image comes from its own generator).
    ap.add_argument("--second-image", default=None, help="WIDTHxHEIGHT of a second raw image")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_grad_enabled(False)
    gen = torch.Generator().manual_seed(args.seed)
    cfg = make_config()
    model = Qwen2VLForConditionalGeneration(cfg).to(torch.float32).eval()
    rescale_(model, gen)
    model.tie_weights()

    tok = make_tokenizer()
    os.makedirs(args.out, exist_ok=True)
    tok.save(os.path.join(args.out, "tokenizer.json"))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<|endoftext|>")
    vc = cfg.vision_config
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=args.min_pixels,
        max_pixels=args.max_pixels,
        patch_size=vc.patch_size,
        temporal_patch_size=vc.temporal_patch_size,
        merge_size=vc.spatial_merge_size,
    )
    processor = ImageOnlyQwen2VLProcessor(image_processor=image_processor, tokenizer=fast, chat_template=CHAT_TEMPLATE)
    width, height = (int(x) for x in args.image_size.lower().split("x"))
    image = raw_image(gen, width, height)
    words = WORDS[9:]
    picks = torch.randint(0, len(words), (args.question_tokens,), generator=gen).tolist()
    question = " ".join(words[i] for i in picks) + " ?"
    images = [image]
    if args.second_image:
        w2, h2 = (int(x) for x in args.second_image.lower().split("x"))
        images.append(raw_image(torch.Generator().manual_seed(args.seed + 1), w2, h2))
    content = [{"type": "image"} for _ in images] + [{"type": "text", "text": question}]
    messages = [{"role": "user", "content": content}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    enc = processor(text=[text], images=images, return_tensors="pt", return_mm_token_type_ids=True)

    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        for f in ("config.json", "model.safetensors"):
            shutil.copy(os.path.join(tmp, f), os.path.join(args.out, f))
    image.save(os.path.join(args.out, "image.png"))
    if args.second_image:
        images[1].save(os.path.join(args.out, "image2.png"))
    golden_name = "golden-2images.safetensors" if args.second_image else "golden.safetensors"
    image_processor.save_pretrained(args.out)
    # The Qwen2-VL-Instruct layout: the template in chat_template.json.
    with open(os.path.join(args.out, "chat_template.json"), "w") as f:
        json.dump({"chat_template": CHAT_TEMPLATE}, f, indent=2)
        f.write("\n")

    logits, generated = greedy(model, enc, NEW_TOKENS)
    save_file(
        {
            "input_ids": enc["input_ids"].to(torch.long).contiguous(),
            "pixel_values": enc["pixel_values"].to(torch.float32).contiguous(),
            "image_grid_thw": enc["image_grid_thw"].to(torch.long).contiguous(),
            "logits": logits.to(torch.float32).contiguous(),
            "generated": torch.tensor([generated], dtype=torch.long),
        },
        os.path.join(args.out, golden_name),
        metadata={
            "seed": str(args.seed),
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "script": "tools/golden/make_qwen2vl.py",
            "architecture": "qwen2_vl",
            "prompt": text,
            "question": question,
            "image": ",".join(["image.png", "image2.png"][: len(images)]),
        },
    )
    last = logits[0, -1]
    top2 = last.topk(2).values
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, seed {args.seed}")
    print(
        f"{golden_name}: {enc['input_ids'].shape[1]} tokens, pixel_values {tuple(enc['pixel_values'].shape)}, "
        f"image_grid_thw {enc['image_grid_thw'].tolist()}, last-row logits [{last.min().item():.3f}, "
        f"{last.max().item():.3f}], generated {generated} (first-step margin {(top2[0] - top2[1]).item():.3f})"
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
