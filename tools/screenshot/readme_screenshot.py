#!/usr/bin/env python3
"""Render `relvqa demo` output as a page and screenshot it with headless Chromium.

Writes docs/screenshot.png for the README. Needs /usr/bin/chromium (apt-get install chromium).
Run from the repository root after `cargo build --release`.
"""
import html
import pathlib
import subprocess
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "target" / "demo"

text = subprocess.run(
    [str(ROOT / "target/release/relvqa"), "demo", "--n", "8", "--out", str(OUT)],
    cwd=ROOT, check=True, capture_output=True, text=True,
).stdout
header, *blocks = [b for b in text.strip().split("\n\n")]
cards = []
for b in blocks:
    path, q, a = [line.strip() for line in b.splitlines()]
    abstain = a.startswith("A: abstain")
    cls = "abstain" if abstain else "answer"
    cards.append(
        f'<div class="card"><img src="file://{html.escape(path if path.startswith("/") else str(ROOT / path))}">'
        f'<div><p class="q">{html.escape(q[3:])}</p><p class="{cls}">{html.escape(a[3:])}</p></div></div>'
    )
page = f"""<!doctype html><meta charset="utf-8"><style>
body {{ font: 14px system-ui, sans-serif; background: #111; color: #eee; margin: 16px; }}
h1 {{ font-size: 18px; margin: 0 0 4px; }} .sub {{ color: #aaa; margin: 0 0 12px; }}
.grid {{ display: grid; grid-template-columns: 1fr 1fr; gap: 10px; }}
.card {{ display: flex; gap: 12px; background: #1d1d1d; padding: 8px; border-radius: 6px; }}
img {{ width: 128px; height: 128px; image-rendering: pixelated; }}
.q {{ margin: 4px 0; }} .answer {{ color: #7fd67f; }} .abstain {{ color: #f0b050; }}
</style><h1>relvqa demo — $ relvqa demo --n 8</h1><p class="sub">{html.escape(header)}</p>
<div class="grid">{''.join(cards)}</div>"""
with tempfile.TemporaryDirectory() as d:
    page_path = pathlib.Path(d) / "demo.html"
    page_path.write_text(page)
    subprocess.run(
        ["/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={d}/profile",
         "--allow-file-access-from-files", "--hide-scrollbars", "--window-size=1100,720",
         f"--screenshot={ROOT / 'docs/screenshot.png'}", page_path.as_uri()],
        check=True, capture_output=True,
    )
print("wrote docs/screenshot.png")
