"""Whether a base can learn to point at the landmark marker at all: full-parameter, no DP.

The federation's landmark score never moves (``simulations/defaults.py``), so this asks whether
any training of the tiny base would move it: a copy of the base is fine-tuned, centrally,
without noise and on every parameter, on point questions about one kind of image, and is then
asked about held-out images of the same kind. Each question is the landmark task's own English
prompt, answered ``[x,y]`` on the 0-1000 grid. Images (``--images``):

- ``scenes``: the marker's ring (radius 3 % of the side, 2.4 % thick) on the plain noisy grey
  of the pretraining scenes (:mod:`shared_model.tiny.scenes`);
- ``chest``: the hospitals' chest radiograph with its marker and, as often as at the
  hospitals, a lesion (:func:`simulations.phantoms.chest_xray`), windowed as a site windows it
  and fitted to the canvas: by the window the hospitals' files carry (``--window file``,
  :class:`simulations.phantoms.Scanner`) or, as for a radiograph without a window of its own,
  by its 0.5-99.5 percentiles (``--window percentile``).

``--range hospital`` places the scenes' ring where the hospitals' marker lies (x 0.42-0.58,
y 0.15-0.30 of the side), ``--range wide`` anywhere in 0.1-0.9; the chest's marker is always
where the hospitals put it. Training runs in cycles of ``--every`` steps, each one
warm-up-and-decay schedule of :func:`shared_model.tiny.build.fit` (so ``--every`` shapes the
learning as well as the table), and after each cycle the table gets a row: the points' mean
error and SDR (within 20 grid units, the task's headline), each axis's correlation with the
truth, and the same scores of the constant answer at the training points' mean. Prints the
table and writes JSON.

    python benchmarks/point_learning.py [--images scenes|chest] [--window file|percentile]
        [--range hospital|wide] [--steps 900] [--every 300] [--lr 1e-3] [--base DIR]
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np
import torch
from dp_learning import write_result
from rich.console import Console
from rich.table import Table
from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

from client.archive.processing import percentile_normalise, to_canvas_pixels, window
from shared_model.device import configure_cpu_threads
from shared_model.inference import Answerer, Question
from shared_model.inputs import encode_example
from shared_model.tasks import get_task
from shared_model.tiny import TINY_CANVAS, ensure_tiny_base
from shared_model.tiny.build import fit
from simulations.phantoms import HOSPITAL_SCANNER, LESION_CLASSES, chest_xray
from simulations.synthetic import MARKER_WORD

SIDE = 96
"""The scenes' and the radiographs' side in pixels before fitting (the hospitals' anatomy)."""
RING_RADIUS, RING_LINE = 0.03, 0.012
"""The hospitals' marker ring (:func:`simulations.phantoms.chest_xray`), as fractions."""
RANGES = {"hospital": ((0.42, 0.58), (0.15, 0.30)), "wide": ((0.1, 0.9), (0.1, 0.9))}
SDR_RADIUS = 20.0
TEST_SEED = 999
"""Held-out images come from their own seed, never from the training stream."""

Image = tuple[np.ndarray, tuple[float, float]]


def scene_with_ring(rng: random.Random, marker_range: str) -> Image:
    """A plain scene with the marker's ring, and the ring's centre in grid units."""
    (x_low, x_high), (y_low, y_high) = RANGES[marker_range]
    cx, cy = rng.uniform(x_low, x_high), rng.uniform(y_low, y_high)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE] / SIDE
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0.0, 8.0, (SIDE, SIDE))
    image = 100.0 + noise
    image[np.abs(np.hypot(xx - cx, yy - cy) - RING_RADIUS) < RING_LINE] = 235.0
    pixels = np.clip(image, 0, 255).astype(np.uint8)
    return to_canvas_pixels(pixels, TINY_CANVAS), (1000 * cx, 1000 * cy)


def chest_with_marker(rng: random.Random, windowing: str) -> Image:
    """A hospital chest radiograph (a lesion in three of four) windowed by ``windowing``
    (``file`` or ``percentile``), and its marker in grid units."""
    generator = np.random.default_rng(rng.getrandbits(32))
    lesion = rng.choice((None, *LESION_CLASSES))
    stored, finding = chest_xray(generator, lesion, size=SIDE)
    if windowing == "file":
        unit = window(stored, *HOSPITAL_SCANNER.window)
    else:
        unit = percentile_normalise(stored, 0.5, 99.5)
    x, y = finding.landmark
    return to_canvas_pixels(unit, TINY_CANVAS), (1000 * x / SIDE, 1000 * y / SIDE)


def draw_images(
    kind: str, marker_range: str, count: int, seed: int, windowing: str = "file"
) -> list[Image]:
    """``count`` images of ``kind`` with their points (radiographs windowed by ``windowing``)."""
    rng = random.Random(seed)
    if kind == "chest":
        return [chest_with_marker(rng, windowing) for _ in range(count)]
    return [scene_with_ring(rng, marker_range) for _ in range(count)]


def point_text(point: tuple[float, float]) -> str:
    """The landmark answer ``[x,y]`` on the grid."""
    return f"[{round(point[0])},{round(point[1])}]"


def point_scores(
    predicted: list[tuple[int, int] | None], truth: list[tuple[float, float]]
) -> dict[str, float]:
    """Mean error and SDR over every image (an answer not in the task's format is a miss and
    adds no error), the share in format, and each axis's correlation over those."""
    pairs = [(p, t) for p, t in zip(predicted, truth, strict=True) if p is not None]
    errors = [float(np.hypot(p[0] - t[0], p[1] - t[1])) for p, t in pairs]
    scores = {
        "read": len(pairs) / len(truth),
        "mean_error": float(np.mean(errors)) if errors else float("nan"),
        "sdr": sum(e <= SDR_RADIUS for e in errors) / len(truth),
    }
    for axis, name in enumerate("xy"):
        got = np.array([p[axis] for p, _ in pairs], dtype=float)
        want = np.array([t[axis] for _, t in pairs], dtype=float)
        spread = len(pairs) > 1 and got.std() > 0 and want.std() > 0
        scores[f"corr_{name}"] = float(np.corrcoef(got, want)[0, 1]) if spread else 0.0
    return scores


def constant_scores(train: list[Image], test: list[Image]) -> dict[str, float]:
    """The scores of answering the training points' mean for every test image."""
    mean = tuple(round(float(np.mean([p[axis] for _, p in train]))) for axis in (0, 1))
    return point_scores([mean] * len(test), [p for _, p in test])


def answer_points(model, processor, fields: dict, images: list[Image]) -> list:
    """``model``'s greedy points for ``images``, each read strictly by the landmark task
    (``None`` where an answer is not ``[x,y]``)."""
    answerer = Answerer(model, processor, TINY_CANVAS, max_new_tokens=16)
    questions = [Question([image], "landmark", "en", fields) for image, _ in images]
    points = []
    for start in range(0, len(questions), 16):
        points.extend(
            answer.reading.strict for answer in answerer.answer(questions[start : start + 16])
        )
    return points


def print_table(rows: list[dict], console: Console) -> None:
    """Each row's point scores, the constant answer's first."""
    table = Table(title="points on held-out images (grid units; SDR within 20)")
    for column in ("steps", "in format", "mean error", "SDR", "corr x", "corr y"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            str(row["steps"]),
            f"{row['read']:.2f}",
            f"{row['mean_error']:.1f}",
            f"{row['sdr']:.3f}",
            f"{row['corr_x']:.2f}",
            f"{row['corr_y']:.2f}",
        )
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", choices=("scenes", "chest"), default="chest")
    parser.add_argument("--window", choices=("file", "percentile"), default="file")
    parser.add_argument("--range", choices=tuple(RANGES), default="hospital")
    parser.add_argument("--steps", type=int, default=900)
    parser.add_argument("--every", type=int, default=300)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--train-images", type=int, default=4096)
    parser.add_argument("--test-images", type=int, default=160)
    parser.add_argument("--base", type=Path, default=None, help="default: the cached tiny base")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/point_learning"))
    args = parser.parse_args()
    configure_cpu_threads()
    torch.manual_seed(0)
    base = args.base or ensure_tiny_base(progress=False)
    processor = AutoProcessor.from_pretrained(base)
    model = Qwen2VLForConditionalGeneration.from_pretrained(base, dtype=torch.float32)
    fields = {"landmark": MARKER_WORD["en"], "point": [0, 0]}
    prompt = get_task("landmark").prompt(fields, "en")
    train = draw_images(args.images, args.range, args.train_images, 0, args.window)
    test = draw_images(args.images, args.range, args.test_images, TEST_SEED, args.window)
    examples = [
        encode_example(processor, [im], prompt, point_text(p), canvas=TINY_CANVAS, max_length=512)
        for im, p in train
    ]
    order = random.Random(1)
    rows = [{"steps": "constant", **constant_scores(train, test)}]
    done = 0
    while True:
        points = answer_points(model, processor, fields, test)
        rows.append({"steps": done, **point_scores(points, [p for _, p in test])})
        if done >= args.steps:
            break
        chunk = min(args.every, args.steps - done)
        fit(
            model, processor, lambda _: order.sample(examples, args.batch), chunk, args.lr,
            f"pointing, steps {done + 1}-{done + chunk}",
        )  # fmt: skip
        done += chunk
    console = Console()
    console.print(
        f"base: {base.name}; images: {args.images} ({args.window} window), range {args.range}; "
        f"{len(train)} training images, {args.batch} a step at {args.lr:g}; {len(test)} held out"
    )
    print_table(rows, console)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    write_result(args.out, {"base": base.name, "settings": settings, "rows": rows}, console)


if __name__ == "__main__":
    main()
