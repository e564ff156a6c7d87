#!/usr/bin/env python3
"""Golden fixture for relvqa's Idefics3 model: a tiny random Idefics3ForConditionalGeneration
run by Hugging Face transformers, written as a model directory plus the inputs and outputs
`relvqa check-reference` compares against.

The configuration deliberately differs from relvqa's shipped default model in the ways real
SmolVLM / Idefics3 checkpoints do (see tools/golden/README.md for the list and why). Weights are
random (seeded) and rescaled so logits spread over several units: a check at 1e-4 then means
something, and greedy ids are not decided by near-ties.

Writes OUT/config.json, OUT/model.safetensors (f32 or bf16, as `save_pretrained` writes them),
OUT/tokenizer.json (our loader needs one; no test tokenizes with it yet) and
OUT/golden.safetensors with input_ids, pixel_values, pixel_attention_mask, logits and generated.
Needs torch + transformers; runs offline. Not used by the Rust build, the tests or CI.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import inspect  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402
from tokenizers import AddedToken  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import (  # noqa: E402
    DynamicCache,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3Processor,
    PreTrainedTokenizerFast,
)
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil  # noqa: E402

# Special tokens at the END of the vocabulary, as in real SmolVLM tokenizers (ids ~49k there):
# ids and config.image_token_id must be read, never assumed to be small. The 36 tile tokens
# `<row_r_col_c>` are the ones Idefics3Processor asks the tokenizer for.
SPECIALS = [
    "<|im_start|>",
    "<end_of_utterance>",
    "<fake_token_around_image>",
    "<global-img>",
    "<image>",
    "<pad>",
] + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
VOCAB = 128
SPECIAL_BASE = VOCAB - len(SPECIALS)
# Plain words: <unk>, the chat template's words, then filler words for random questions; then
# "\n" (an added, non-special token, so the tile rows' newlines are tokens as in a byte-level
# BPE) right before the specials.
WORDS = ["<unk>", "User", ":", "Assistant", "?", "what", "is", "the", "color", "shape"]
WORDS += [f"w{i}" for i in range(SPECIAL_BASE - 1 - len(WORDS))]
NEW_TOKENS = 8


def make_config() -> Idefics3Config:
    special_base = SPECIAL_BASE
    image_token_id = special_base + SPECIALS.index("<image>")
    text = dict(
        model_type="llama",
        vocab_size=VOCAB,
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=2,  # GQA ratio 3, as SmolVLM-256M (9 heads / 3 KV heads)
        head_dim=12,  # heads * head_dim = 72 != hidden_size 48: head_dim is not hidden / heads
        max_position_embeddings=256,
        rms_norm_eps=1e-6,
        rope_theta=100000.0,  # SmolVLM's; transformers 5 writes it as rope_parameters.rope_theta
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=special_base + SPECIALS.index("<end_of_utterance>"),
        pad_token_id=special_base + SPECIALS.index("<pad>"),
    )
    vision = dict(
        model_type="idefics3_vision",
        hidden_size=48,
        intermediate_size=80,
        num_hidden_layers=2,
        num_attention_heads=3,  # head_dim 16
        num_channels=3,
        image_size=48,
        patch_size=8,  # 6 patches a side: not a power of two (Idefics3-8B has 26)
        hidden_act="gelu_pytorch_tanh",
        layer_norm_eps=1e-6,
    )
    return Idefics3Config(
        text_config=text,
        vision_config=vision,
        scale_factor=3,  # 6x6 patches -> 2x2 = 4 image tokens, each 9 patches deep
        image_token_id=image_token_id,
        tie_word_embeddings=True,  # SmolVLM-256M/500M tie lm_head to the embeddings
    )


def rescale_(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Re-draw every parameter with scales that keep activations O(1) through the tiny net."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif "embed_tokens" in name:
                # Small enough that the tied lm_head does not just echo the last token back.
                p.copy_(0.15 * torch.randn(p.shape, generator=gen))
            elif "position_embedding" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in**0.5)


def make_tokenizer() -> Tokenizer:
    """A word-level tokenizer: WORDS, then "\n", then SPECIALS, ids in that order."""
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
    """A smooth random RGB image (so resampling matters, unlike pure noise): a low-resolution
    random grid upsampled bilinearly, quantised to 8 bits."""
    small = torch.rand((1, 3, 5, 6), generator=gen)
    big = torch.nn.functional.interpolate(small, size=(height, width), mode="bilinear", align_corners=False)
    arr = (big[0].permute(1, 2, 0) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    return Image.fromarray(arr, "RGB")


# SmolVLM's chat template, as its checkpoints ship it; written to OUT/chat_template.json so
# `relvqa ask` builds the prompt from the checkpoint as the processor does.
SMOLVLM_CHAT_TEMPLATE = "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"


def processor_inputs(processor, image: Image.Image, question: str, split: bool):
    """input_ids, pixel_values and pixel_attention_mask exactly as Idefics3Processor makes them
    for SmolVLM's chat format, one image, split into tiles plus a global image or not."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    text = processor.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == f"<|im_start|>User:<image>{question}<end_of_utterance>\nAssistant:", text
    enc = processor(
        text=[text],
        images=[[image]],
        return_tensors="pt",
        do_image_splitting=split,
    )
    return text, enc["input_ids"], enc["pixel_values"], enc["pixel_attention_mask"]


def padded_inputs(processor, image: Image.Image, question: str):
    """A prompt with two images that are *padded*, plus one all-zero batch-padding image: what
    `get_image_features` handles with `pixel_attention_mask`, built by hand because
    Idefics3ImageProcessor never pads one prompt's images (it squares or tiles each to
    `max_image_size`; `do_pad` pads only across a batch).

    The ids come from the processor (two unsplit images); each image is then replaced by the
    raw image resized (LANCZOS, aspect not kept) to a size that is not a multiple of the patch
    size, rescaled and normalised as the processor does, and padded bottom-right to the tile
    with the processor's own `pad` (zeros, mask 1 on the real pixels). The third image is all
    zeros with an all-zero mask: transformers drops it (`real_images_inds`), as it does for
    the sample with fewer images in a batch."""
    ip = processor.image_processor
    side = ip.max_image_size["longest_edge"]
    text = f"<|im_start|>User:<image><image>{question}<end_of_utterance>\nAssistant:"
    enc = processor(text=[text], images=[[image, image]], return_tensors="pt", do_image_splitting=False)
    # (width, height): 5x4 and 3x6 real patches of 8 pixels, the last ones partly real.
    sizes = [(37, 27), (20, 45)]
    pixels, masks = [], []
    for w, h in sizes:
        small = image.resize((w, h), Image.LANCZOS)
        arr = np.asarray(small, dtype=np.float32).transpose(2, 0, 1)
        arr = ip.normalize(ip.rescale(arr, ip.rescale_factor), ip.image_mean, ip.image_std)
        padded, mask = ip.pad(arr.astype(np.float32), (side, side))
        pixels.append(torch.from_numpy(np.ascontiguousarray(padded, dtype=np.float32)))
        masks.append(torch.from_numpy(np.ascontiguousarray(mask)))
    pixels.append(torch.zeros_like(pixels[0]))
    masks.append(torch.zeros_like(masks[0]))
    pixel_values = torch.stack(pixels)[None]
    pixel_attention_mask = torch.stack(masks)[None].to(torch.bool)
    return text, enc["input_ids"], pixel_values, pixel_attention_mask, sizes


def greedy(model, input_ids, pixel_values, pixel_attention_mask, n: int):
    """Greedy decoding with the KV cache, exactly n tokens (no stop on end-of-utterance: the
    check is of the numbers, not of when an answer ends). Returns the prompt's logits too."""
    # transformers 5.24 renamed `past_key_values` to `cache`; accept either.
    params = inspect.signature(model.forward).parameters
    cache_kw = "cache" if "cache" in params else "past_key_values"
    cache = DynamicCache(config=model.config)
    out = model(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        pixel_values=pixel_values,
        pixel_attention_mask=pixel_attention_mask,
        use_cache=True,
        **{cache_kw: cache},
    )
    prompt_logits = out.logits
    seen = input_ids.shape[1]
    new = []
    nxt = out.logits[:, -1].argmax(-1)
    for step in range(n):
        new.append(nxt.item())
        if step == n - 1:
            break
        seen += 1
        out = model(
            input_ids=nxt[:, None],
            attention_mask=torch.ones((1, seen), dtype=torch.long),
            use_cache=True,
            **{cache_kw: cache},
        )
        nxt = out.logits[:, -1].argmax(-1)
    # Cross-check the hand-written loop against transformers' own generate() up to the first
    # end-of-utterance (where generate stops).
    ref = model.generate(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        pixel_values=pixel_values,
        pixel_attention_mask=pixel_attention_mask,
        max_new_tokens=n,
        do_sample=False,
    )[0, input_ids.shape[1]:].tolist()
    if ref != new[: len(ref)]:
        raise SystemExit(f"greedy loop {new} disagrees with generate() {ref}")
    return prompt_logits, new


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="fixture directory to (re)write")
    # The committed fixture's seed: its greedy ids change from step to step in both goldens, so
    # the id check means more than "both repeat one token".
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--question-tokens", type=int, default=7)
    ap.add_argument("--image-size", default="80x60", help="raw image WIDTHxHEIGHT (before the processor)")
    ap.add_argument(
        "--dtype",
        choices=["f32", "bf16"],
        default="f32",
        help="dtype of model.safetensors; bf16 (what real SmolVLM checkpoints ship) rounds the "
        "weights to bf16 first, and transformers still computes in f32 with the rounded values",
    )
    ap.add_argument(
        "--padded",
        action="store_true",
        help="also write golden-padded.safetensors: two hand-padded images (partial "
        "pixel_attention_mask) and one all-zero padding image, which the processor never makes "
        "for one prompt",
    )
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_grad_enabled(False)
    gen = torch.Generator().manual_seed(args.seed)
    cfg = make_config()
    model = Idefics3ForConditionalGeneration(cfg).to(torch.float32).eval()
    rescale_(model, gen)
    model.tie_weights()
    if args.dtype == "bf16":
        # Parameters only: `model.to(bfloat16)` would also round buffers such as RoPE's
        # inv_freq, which transformers recomputes in f32 when it loads a bf16 checkpoint.
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.to(torch.bfloat16).to(torch.float32))

    tok = make_tokenizer()
    os.makedirs(args.out, exist_ok=True)
    tok.save(os.path.join(args.out, "tokenizer.json"))
    vc = cfg.vision_config
    image_seq_len = (vc.image_size // vc.patch_size) ** 2 // cfg.scale_factor**2
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>")
    fast.chat_template = SMOLVLM_CHAT_TEMPLATE
    with open(os.path.join(args.out, "chat_template.json"), "w") as f:
        json.dump({"chat_template": SMOLVLM_CHAT_TEMPLATE}, f, indent=2)
        f.write("\n")
    # size: the longest edge the image is first resized to; max_image_size: the tile side,
    # which must be the vision tower's image_size (SmolVLM: 512 and 512 * 4 by default).
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": 2 * vc.image_size},
        max_image_size={"longest_edge": vc.image_size},
    )
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=fast, image_seq_len=image_seq_len)
    # Default: a landscape 80x60 image, resized to 96x72, then up to 96x96 = 2x2 tiles + global.
    width, height = (int(x) for x in args.image_size.lower().split("x"))
    image = raw_image(gen, width, height)
    words = WORDS[5:]
    picks = torch.randint(0, len(words), (args.question_tokens,), generator=gen).tolist()
    question = " ".join(words[i] for i in picks) + " ?"

    with tempfile.TemporaryDirectory() as tmp:
        if args.dtype == "bf16":
            # A tied lm_head is not stored, as save_pretrained does for the f32 model.
            state = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items() if k != "lm_head.weight"}
            model.save_pretrained(tmp, state_dict=state)
            cfg_path = os.path.join(tmp, "config.json")
            with open(cfg_path) as f:
                saved = json.load(f)
            saved["dtype"] = "bfloat16"
            with open(cfg_path, "w") as f:
                json.dump(saved, f, indent=2, sort_keys=True)
        else:
            model.save_pretrained(tmp)
        for f in ("config.json", "model.safetensors"):
            shutil.copy(os.path.join(tmp, f), os.path.join(args.out, f))
    image.save(os.path.join(args.out, "image.png"))
    # What `relvqa check-reference --raw` reads to rebuild the inputs (do_image_splitting is
    # overridden per golden from its metadata).
    image_processor.save_pretrained(args.out)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, seed {args.seed}")
    for split, name in ((False, "golden.safetensors"), (True, "golden-tiled.safetensors")):
        text, input_ids, pixel_values, pixel_attention_mask = processor_inputs(processor, image, question, split)
        logits, generated = greedy(model, input_ids, pixel_values, pixel_attention_mask, NEW_TOKENS)
        save_file(
            {
                "input_ids": input_ids.to(torch.long).contiguous(),
                "pixel_values": pixel_values.to(torch.float32).contiguous(),
                "pixel_attention_mask": pixel_attention_mask.to(torch.bool).contiguous(),
                "logits": logits.to(torch.float32).contiguous(),
                "generated": torch.tensor([generated], dtype=torch.long),
            },
            os.path.join(args.out, name),
            metadata={
                "seed": str(args.seed),
                "transformers": transformers.__version__,
                "torch": torch.__version__,
                "script": "tools/golden/make_idefics3.py",
                "prompt": text,
                "image": "image.png",
                "do_image_splitting": str(split).lower(),
                "weights_dtype": args.dtype,
            },
        )
        last = logits[0, -1]
        top2 = last.topk(2).values
        print(
            f"{name}: {input_ids.shape[1]} tokens, pixel_values {tuple(pixel_values.shape)}, "
            f"last-row logits [{last.min().item():.3f}, {last.max().item():.3f}], "
            f"generated {generated} (first-step margin {(top2[0] - top2[1]).item():.3f})"
        )
    if args.padded:
        # Drawn after everything above, so the other files do not depend on --padded.
        text, input_ids, pixel_values, pixel_attention_mask, sizes = padded_inputs(processor, image, question)
        logits, generated = greedy(model, input_ids, pixel_values, pixel_attention_mask, NEW_TOKENS)
        name = "golden-padded.safetensors"
        save_file(
            {
                "input_ids": input_ids.to(torch.long).contiguous(),
                "pixel_values": pixel_values.to(torch.float32).contiguous(),
                "pixel_attention_mask": pixel_attention_mask.contiguous(),
                "logits": logits.to(torch.float32).contiguous(),
                "generated": torch.tensor([generated], dtype=torch.long),
            },
            os.path.join(args.out, name),
            metadata={
                "seed": str(args.seed),
                "transformers": transformers.__version__,
                "torch": torch.__version__,
                "script": "tools/golden/make_idefics3.py --padded",
                "prompt": text,
                "image": "image.png",
                "do_image_splitting": "false",
                "padded": "by hand: image.png resized to "
                + " and ".join(f"{w}x{h}" for w, h in sizes)
                + ", each padded to the tile with Idefics3ImageProcessor.pad; then one all-zero padding image",
                "weights_dtype": args.dtype,
            },
        )
        last = logits[0, -1]
        top2 = last.topk(2).values
        print(
            f"{name}: {input_ids.shape[1]} tokens, pixel_values {tuple(pixel_values.shape)}, "
            f"real pixels {pixel_attention_mask[0].sum(dim=(1, 2)).tolist()}, "
            f"last-row logits [{last.min().item():.3f}, {last.max().item():.3f}], "
            f"generated {generated} (first-step margin {(top2[0] - top2[1]).item():.3f})"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
