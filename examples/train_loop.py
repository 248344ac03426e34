"""A training-shaped script: a tiny logistic regression in pure Python, logged with expman.

    python examples/train_loop.py --epochs 20 --lr 0.1
    expman serve            # and open the URL it prints

Ctrl-C marks the run interrupted, an exception marks it failed; every row logged before is
kept either way.
"""
import argparse
import math
import random

from expman import Experiment


def make_data(n, rng):
    data = []
    for _ in range(n):
        x = [rng.gauss(0, 1) for _ in range(4)]
        y = 1 if 0.8 * x[0] - 0.5 * x[1] + 0.3 * x[2] + rng.gauss(0, 0.5) > 0 else 0
        data.append((x, y))
    return data


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--base-dir", default=None)
    args = parser.parse_args()
    rng = random.Random(0)
    train, val = make_data(2000, rng), make_data(500, rng)
    w, b = [0.0] * 4, 0.0
    with Experiment("logreg", base_dir=args.base_dir, config=vars(args),
                    tags=["example", "pure-python"]) as exp:
        step = 0
        for epoch in range(args.epochs):
            rng.shuffle(train)
            for i in range(0, len(train), args.batch_size):
                batch = train[i:i + args.batch_size]
                gw, gb, loss = [0.0] * 4, 0.0, 0.0
                for x, y in batch:
                    p = 1 / (1 + math.exp(-(sum(wi * xi for wi, xi in zip(w, x)) + b)))
                    loss -= y * math.log(p + 1e-12) + (1 - y) * math.log(1 - p + 1e-12)
                    for j in range(4):
                        gw[j] += (p - y) * x[j]
                    gb += p - y
                w = [wi - args.lr * g / len(batch) for wi, g in zip(w, gw)]
                b -= args.lr * gb / len(batch)
                exp.log_metrics({"train/loss": loss / len(batch)}, step=step)
                step += 1
            correct = sum((sum(wi * xi for wi, xi in zip(w, x)) + b > 0) == bool(y) for x, y in val)
            exp.log_metrics({"val/acc": correct / len(val), "epoch": epoch}, step=step)
            exp.info(f"epoch {epoch}: val/acc {correct / len(val):.3f}")
        exp.log_scalar("final/val_acc", correct / len(val))
        print(f"run saved in {exp.run_dir}")


if __name__ == "__main__":
    main()
