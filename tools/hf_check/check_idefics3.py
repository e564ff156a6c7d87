#!/usr/bin/env python3
"""Parity check: Hugging Face transformers' Idefics3ForConditionalGeneration vs relvqa.

Loads a relvqa model directory (config.json, tokenizer.json, model.safetensors) with
transformers, answers the questions written by `relvqa dataset` greedily, and compares the
answers with the `predictions` of a `relvqa eval --json` report (joined on `index`).

Exit code 0 only if every answer matches.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import Idefics3ForConditionalGeneration, PreTrainedTokenizerFast  # noqa: E402


def build_prompt(question: str, image_seq_len: int) -> str:
    # What Idefics3Processor produces for one image that is not split into tiles.
    return (
        "<|im_start|>User:<fake_token_around_image><global-img>"
        + "<image>" * image_seq_len
        + "<fake_token_around_image>"
        + question.strip()
        + "<end_of_utterance>\nAssistant:"
    )


def ours_ids(tok, question: str, image_seq_len: int) -> list:
    """The ids relvqa's build_prompt makes: pieces encoded separately, specials pushed as ids."""
    sid = tok.convert_tokens_to_ids
    enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    ids = [sid("<|im_start|>")] + enc("User:")
    ids += [sid("<fake_token_around_image>"), sid("<global-img>")]
    ids += [sid("<image>")] * image_seq_len
    ids += [sid("<fake_token_around_image>")] + enc(question.strip())
    ids += [sid("<end_of_utterance>")] + enc("Assistant:")
    return ids


def load_pixels(path: str, side: int) -> torch.Tensor:
    img = Image.open(path).convert("RGB")
    if img.size != (side, side):
        raise SystemExit(f"{path}: image is {img.size}, expected {side}x{side} (no resizing done here)")
    x = np.asarray(img, dtype=np.float32) / 255.0  # [H, W, C]
    x = (x - 0.5) / 0.5
    x = torch.from_numpy(x).permute(2, 0, 1).contiguous()  # [C, H, W]
    return x[None, None]  # [batch, num_images, C, H, W]


def norm(s: str) -> str:
    return " ".join(s.split())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="relvqa / HF model directory")
    ap.add_argument("--samples", required=True, help="directory written by `relvqa dataset` (questions.jsonl + PNGs)")
    ap.add_argument("--ours", required=True, help="JSON report written by `relvqa eval --json`")
    ap.add_argument("--limit", type=int, default=None, help="check at most N samples")
    ap.add_argument("--max-new-tokens", type=int, default=8)
    args = ap.parse_args()

    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    torch.manual_seed(0)
    torch.set_grad_enabled(False)

    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(args.model, "tokenizer.json"))
    model, info = Idefics3ForConditionalGeneration.from_pretrained(
        args.model, dtype=torch.float32, output_loading_info=True
    )
    model.eval()
    print(f"loaded {type(model).__name__} from {args.model}")
    bad = {k: sorted(v) for k, v in info.items() if v}
    if bad:
        print(f"FAIL: weights did not load cleanly: {bad}")
        return 1
    cfg = model.config
    vc = cfg.vision_config
    side = vc.image_size
    image_seq_len = (side // vc.patch_size) ** 2 // (cfg.scale_factor**2)

    eou = tok.convert_tokens_to_ids("<end_of_utterance>")
    pad = tok.convert_tokens_to_ids("<pad>")
    img_id = tok.convert_tokens_to_ids("<image>")
    if img_id != cfg.image_token_id:
        print(f"FAIL: tokenizer <image> id {img_id} != config image_token_id {cfg.image_token_id}")
        return 1

    with open(os.path.join(args.samples, "questions.jsonl")) as f:
        samples = [json.loads(line) for line in f if line.strip()]
    with open(args.ours) as f:
        ours = {p["index"]: p for p in json.load(f)["predictions"]}
    samples = [s for s in samples if s["index"] in ours]
    if args.limit is not None:
        samples = samples[: args.limit]
    if not samples:
        print("FAIL: no samples joined on index")
        return 1
    print(f"samples: {len(samples)} (joined on index)")

    matches, mismatches, prompt_mismatch = 0, [], 0
    answers = set()
    d_maxprob = []
    for n, s in enumerate(samples):
        q = s["question"]
        text = build_prompt(q, image_seq_len)
        ids = tok.encode(text, add_special_tokens=False)
        rust_ids = ours_ids(tok, q, image_seq_len)
        if n == 0:
            print(f"prompt text   : {text!r}")
            print(f"HF prompt ids : {ids}")
            print(f"our prompt ids: {rust_ids}")
        if ids != rust_ids:
            prompt_mismatch += 1
        input_ids = torch.tensor([ids])
        pixels = load_pixels(os.path.join(args.samples, s["image"]), side)
        pmask = torch.ones((1, 1, side, side), dtype=torch.bool)
        out = model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            pixel_values=pixels,
            pixel_attention_mask=pmask,
            max_new_tokens=args.max_new_tokens,
            do_sample=False,
            eos_token_id=eou,
            pad_token_id=pad,
            return_dict_in_generate=True,
            output_logits=True,
        )
        new = out.sequences[0, input_ids.shape[1]:].tolist()
        probs = [torch.softmax(l[0].float(), -1) for l in out.logits]
        answer_toks = []
        p_answer = 1.0
        # The answer's probability includes its terminator, as relvqa's MaxProb does.
        for t, p in zip(new, probs):
            p_answer *= p[t].item()
            if t == eou:
                break
            answer_toks.append(t)
        hf = tok.decode(answer_toks, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        answers.add(norm(hf))
        o = ours[s["index"]]
        if norm(o["question"]) != norm(q):
            print(f"FAIL: index {s['index']}: question differs between samples ({q!r}) and report ({o['question']!r})")
            return 1
        ok = norm(hf) == norm(o["prediction"])
        if ok:
            matches += 1
            d_maxprob.append(abs(p_answer - o["maxprob"]))
        else:
            mismatches.append((s["index"], q, hf, o["prediction"], p_answer, o["maxprob"]))

    print(f"prompt id lists equal (HF tokenizer vs our construction): {len(samples) - prompt_mismatch}/{len(samples)}")
    print(f"greedy answers equal: {matches}/{len(samples)} ({len(answers)} distinct HF answers)")
    if d_maxprob:
        print(f"matching answers: max |P_HF(answer) - our maxprob| = {max(d_maxprob):.3e}")
    for idx, q, hf, ou, ph, po in mismatches:
        print(f"MISMATCH index={idx} q={q!r}: HF={hf!r} (p={ph:.4f}) ours={ou!r} (maxprob={po:.4f})")
    ok = not mismatches and prompt_mismatch == 0
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
