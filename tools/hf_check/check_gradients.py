"""Compare relvqa's training gradients with transformers' on the same weights and batch.

Input: a model directory and the file `cargo run --release --example grad_dump -- DIR OUT`
wrote (the batch's ids, pixels, supervised positions and targets, the loss, and every
parameter's gradient). transformers' Idefics3ForConditionalGeneration recomputes the loss
(cross-entropy of the logits at the supervised positions, float32, no padding mask: rows are
right-padded and attention is causal, as in relvqa's training) and its gradients.

Prints both losses and the parameters whose gradients differ most (relative L2). Exit code 0
when the losses agree within 1e-5 relative and every gradient with norm above 1e-6 agrees
within 1e-4 relative.
"""
import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import Idefics3ForConditionalGeneration  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--grads", required=True)
    a = ap.parse_args()
    g = load_file(a.grads)
    m = Idefics3ForConditionalGeneration.from_pretrained(a.model, dtype=torch.float32)
    ids, px = g["ids"], g["pixels"]
    rows, side = ids.shape[0], px.shape[-1]
    out = m(
        input_ids=ids,
        pixel_values=px.unsqueeze(1),
        pixel_attention_mask=torch.ones(rows, 1, side, side, dtype=torch.bool),
    )
    logits = out.logits.reshape(-1, out.logits.shape[-1])[g["positions"]]
    loss = torch.nn.functional.cross_entropy(logits, g["targets"])
    ours = g["loss"].item()
    print(f"loss: transformers {loss.item():.8f}, relvqa {ours:.8f}")
    loss.backward()
    ok = abs(loss.item() - ours) <= 1e-5 * abs(loss.item())
    diffs = []
    for name, p in m.named_parameters():
        theirs = p.grad if p.grad is not None else torch.zeros_like(p)
        mine = g.get("grad." + name, torch.zeros_like(p))
        norm = theirs.norm().item()
        rel = ((mine - theirs).norm() / max(norm, 1e-12)).item()
        diffs.append((rel, name, norm))
        if norm > 1e-6 and rel > 1e-4:
            ok = False
    diffs.sort(reverse=True)
    for rel, name, norm in diffs[:10]:
        print(f"{rel:.2e}  {name}  (|grad| {norm:.3e})")
    print(f"{len(diffs)} parameters; {'all agree' if ok else 'DISAGREE'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
