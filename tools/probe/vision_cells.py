"""How fast does the default model's vision tower learn shapes, by where objects may sit?

The Idefics3 vision tower of `models/default` (hidden 128, 3 layers, 4 heads, patch 8, 64x64
images, N(0, 0.02) init), 2x pixel shuffle and a linear map to 128 (the connector), then a
linear probe naming the kind of the object under each of the 16 image tokens (5 kinds + none),
trained with AdamW 3e-4 (100 warm-up steps), batch 48, clip 1.0. Scenes are drawn like the
shapes dataset's (1 to 6 objects, 8 jittered colours, noisy background, no overlaps), with
objects placed anywhere (`--lattice 0`) or centred in the cells of a lattice (`--lattice 16`:
the token grid; `--lattice 8`: the patch grid) up to `--jitter` pixels off the centre.

Prints the accuracy on object cells of 300 held-out images every 50 steps. torch + transformers
in a venv (tools/hf_check/README.md); not used by tests or CI.

    python tools/probe/vision_cells.py --lattice 0  --r-small 6.5 --r-large 9.5 --steps 600
    python tools/probe/vision_cells.py --lattice 16 --jitter 2.5 --steps 200
"""
import argparse
import time

import numpy as np
import torch
from transformers import Idefics3VisionConfig
from transformers.models.idefics3.modeling_idefics3 import Idefics3VisionTransformer

COLORS = [[215, 40, 40], [40, 170, 60], [45, 80, 225], [230, 215, 50],
          [150, 60, 195], [240, 135, 30], [50, 205, 215], [235, 235, 235]]
YY, XX = np.mgrid[0:64, 0:64] + 0.5


def contains(k, dx, dy, r):
    if k == 0:
        return dx * dx + dy * dy <= r * r
    if k == 1:
        return (abs(dx) <= r * .85) & (abs(dy) <= r * .85)
    if k == 2:
        return (dy >= -r) & (dy <= r) & (abs(dx) <= (dy + r) / 2)
    if k == 3:
        return abs(dx) + abs(dy) <= r
    t = r / 3
    return ((abs(dx) <= t) & (abs(dy) <= r)) | ((abs(dy) <= t) & (abs(dx) <= r))


def scene(rng, a):
    n = rng.integers(1, 7)
    objs, tries = [], 0
    while len(objs) < n and tries < 400:
        tries += 1
        k, c = int(rng.integers(0, 5)), int(rng.integers(0, 8))
        if any(o[0] == k and o[1] == c for o in objs):
            continue
        r = a.r_small if rng.random() < .5 else a.r_large
        if a.lattice:
            cells = 64 // a.lattice
            at = lambda: np.clip(rng.integers(0, cells) * a.lattice + a.lattice / 2
                                 + rng.uniform(-a.jitter, a.jitter), r + 1, 63 - r)
            cx, cy = at(), at()
        else:
            cx, cy = rng.uniform(r + 1, 63 - r), rng.uniform(r + 1, 63 - r)
        if all(abs(o[3] - cx) >= o[2] + r + 2 or abs(o[4] - cy) >= o[2] + r + 2 for o in objs):
            objs.append((k, c, r, cx, cy))
    return objs


def batch(rng, n, a):
    imgs = np.zeros((n, 64, 64, 3), np.float32)
    ys = np.full((n, 16), 5, np.int64)
    for i in range(n):
        noise = rng.integers(0, 14, (64, 64))
        img = np.stack([18 + noise, 18 + noise, 22 + noise], -1).astype(np.float32)
        owner = np.full((64, 64), -1)
        objs = scene(rng, a)
        for j, (k, c, r, cx, cy) in enumerate(objs):
            m = contains(k, XX - cx, YY - cy, r)
            img[m] = np.clip(np.array(COLORS[c]) + rng.integers(-18, 19, 3), 0, 255)
            owner[m] = j
        for g in range(16):
            cell = owner[(g // 4) * 16:(g // 4 + 1) * 16, (g % 4) * 16:(g % 4 + 1) * 16]
            counts = [(cell == j).sum() for j in range(len(objs))]
            if counts and max(counts) >= 12:
                ys[i, g] = objs[int(np.argmax(counts))][0]
        imgs[i] = img
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2) / 255.0
    return (x - 0.5) / 0.5, torch.from_numpy(ys)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lattice", type=int, default=16, help="cell size in px; 0 = anywhere")
    ap.add_argument("--jitter", type=float, default=2.5)
    ap.add_argument("--r-small", type=float, default=5.5)
    ap.add_argument("--r-large", type=float, default=7.5)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--lr", type=float, default=3e-4)
    a = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    hid = 128
    cfg = Idefics3VisionConfig(hidden_size=hid, intermediate_size=2 * hid, num_hidden_layers=3,
                               num_attention_heads=4, image_size=64, patch_size=8,
                               hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)
    vt = Idefics3VisionTransformer(cfg)
    for _, p in vt.named_parameters():
        if p.dim() > 1:
            torch.nn.init.normal_(p, 0, 0.02)
    proj = torch.nn.Linear(hid * 4, 128, bias=False)
    head = torch.nn.Linear(128, 6, bias=False)
    for m in (proj, head):
        torch.nn.init.normal_(m.weight, 0, 0.02)

    def logits(x):
        h = vt(pixel_values=x).last_hidden_state
        b = h.shape[0]
        # transformers' Idefics3 pixel_shuffle with scale 2 on the 8x8 patch grid
        h = h.view(b, 8, 4, hid * 2).permute(0, 2, 1, 3).reshape(b, 4, 4, hid * 4)
        h = h.permute(0, 2, 1, 3).reshape(b, 16, hid * 4)
        return head(proj(h))

    params = list(vt.parameters()) + list(proj.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.01)
    rng, vrng = np.random.default_rng(0), np.random.default_rng(1)
    vx, vy = batch(vrng, 300, a)
    t0 = time.time()
    for s in range(a.steps):
        for g in opt.param_groups:
            g["lr"] = a.lr * min(1, (s + 1) / 100)
        x, y = batch(rng, 48, a)
        loss = torch.nn.functional.cross_entropy(logits(x).reshape(-1, 6), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if (s + 1) % 50 == 0:
            with torch.no_grad():
                p = logits(vx).argmax(-1)
                m = vy != 5
                acc = (p[m] == vy[m]).float().mean().item()
            print(f"step {s + 1} loss {loss.item():.3f} object-cell accuracy {acc:.3f} "
                  f"({time.time() - t0:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
