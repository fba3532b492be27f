"""Train the word-level LSTM LM twice from the same seed, with and without gradient clipping, both watched, and
draw the two timelines side by side.

    python examples/word_lm/run_both.py [--steps 200] [--hidden 128] [--out runs/word_lm] [--png docs/word_lm_timeline.png]

Then ``gdlab dashboard --runs runs/word_lm`` shows both on the Timeline tab.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for p in (HERE, HERE.parents[1]):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--lr", type=float, default=20.0)
    ap.add_argument("--clip", type=float, default=0.25)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--out", default="runs/word_lm")
    ap.add_argument("--png", default=None, help="also write the side-by-side timeline as a PNG (needs Chromium)")
    args = ap.parse_args(argv)
    import torch

    from lm import train

    torch.set_num_threads(1)
    for name, clip in ((f"clip-{args.clip:g}", args.clip), ("no-clip", 0.0)):
        print(f"== {name}")
        train(os.path.join(args.out, name), clip=clip, steps=args.steps, lr=args.lr, every=args.every,
              hidden=args.hidden)
    if args.png:
        from analysis import load_run
        from analysis.export import figure_bytes
        from analysis.figures.timeline import timeline_figure
        runs = {n: load_run(os.path.join(args.out, n)) for n in (f"clip-{args.clip:g}", "no-clip")}
        Path(args.png).parent.mkdir(parents=True, exist_ok=True)
        Path(args.png).write_bytes(figure_bytes(timeline_figure(runs), "png"))
        print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
