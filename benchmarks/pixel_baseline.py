"""How well a linear classifier on raw pixels does on the synthetic data set (it should do poorly).

    python benchmarks/pixel_baseline.py              # 10 primary classes, 200 train / 50 val each, 128 px, seed 0
    python benchmarks/pixel_baseline.py --data DIR   # a folder written by `zfnet data synth`
    python benchmarks/pixel_baseline.py --pool 8     # on 8x8-averaged pixels (16 px images)

Trains a linear softmax on standardised RGB pixels with full-batch L-BFGS for several L2 weights and
prints the validation accuracy of each and the best. Picking the weight on the validation set flatters
the baseline, which is the safe side for the claim that raw pixels do not solve the data set.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from zfnet.data.images import open_image
from zfnet.data.synthetic import write_synthetic


def load(root: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``split -> (pixels (N, 3*S*S) float32 in [0, 1], labels (N,))`` from ``annotations.json``."""
    ann = json.loads((root / "annotations.json").read_text(encoding="utf-8"))
    out = {}
    for split in ("train", "val"):
        items = [(k, v["label"]) for k, v in ann["images"].items() if k.startswith(f"{split}/")]
        x = np.stack([np.asarray(open_image(root / k), dtype=np.float32).reshape(-1) / 255.0
                      for k, _ in items])
        out[split] = (torch.from_numpy(x), torch.tensor([label for _, label in items]))
    return out


def linear_accuracy(x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor,
                    weight_decay: float, iters: int = 200) -> tuple[float, float]:
    """(train, val) accuracy of an L2-regularised linear softmax fitted by full-batch L-BFGS."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(x_train.shape[1], int(y_train.max()) + 1)
    opt = torch.optim.LBFGS(linear.parameters(), max_iter=iters, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(linear(x_train), y_train)
        loss = loss + weight_decay / 2 * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        train = (linear(x_train).argmax(1) == y_train).float().mean().item()
        val = (linear(x_val).argmax(1) == y_val).float().mean().item()
    return train, val


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, help="existing synthetic data set (default: write one to a temp folder)")
    p.add_argument("--classes", type=int, default=10, help="classes (default 10)")
    p.add_argument("--per-class", type=int, default=200, help="training images per class (default 200)")
    p.add_argument("--val-per-class", type=int, default=50, help="validation images per class (default 50)")
    p.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    p.add_argument("--seed", type=int, default=0, help="data set seed (default 0)")
    p.add_argument("--class-set", default="primary", help="primary or secondary (default primary)")
    p.add_argument("--pool", type=int, default=1, help="average pixels over POOL x POOL blocks first (default 1)")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = args.data
        if root is None:
            t = time.perf_counter()
            summary = write_synthetic(Path(tmp) / "synth", classes=args.classes, per_class=args.per_class,
                                      val_per_class=args.val_per_class, seed=args.seed, size=args.size,
                                      class_set=args.class_set)
            root = summary.root
            print(f"wrote {summary.counts} images in {time.perf_counter() - t:.1f} s")
        data = load(root)
    (x_train, y_train), (x_val, y_val) = data["train"], data["val"]
    if args.pool > 1:  # coarse pixels: does colour or brightness at a coarse position give the class away?
        side = int(round((x_train.shape[1] // 3) ** 0.5))

        def coarse(x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.avg_pool2d(x.view(-1, side, side, 3).permute(0, 3, 1, 2), args.pool).flatten(1)

        x_train, x_val = coarse(x_train), coarse(x_val)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-3
    x_train, x_val = (x_train - mean) / std, (x_val - mean) / std
    classes = int(y_train.max()) + 1
    print(f"{len(y_train)} train / {len(y_val)} val images, {x_train.shape[1]} inputs, {classes} classes, "
          f"chance {1 / classes:.3f}")
    best = 0.0
    for wd in (1e-4, 1e-3, 1e-2, 1e-1, 1.0):
        train, val = linear_accuracy(x_train, y_train, x_val, y_val, wd)
        best = max(best, val)
        print(f"  L2 {wd:g}: train {train:.3f}  val {val:.3f}")
    print(f"raw-pixel linear classifier, best val accuracy: {best:.3f}")


if __name__ == "__main__":
    main()
