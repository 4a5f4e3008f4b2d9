"""What a base can do before any federated training: its answers to fresh pretraining scenes.

The tiny base stands in for a pretrained Qwen2-VL, which can already copy a listed option by
its number or its words, name what it sees, and box or point at a shape. Federated LoRA under
DP can only steer skills the base has: a base that cannot copy ``2:text`` out of a list gives
no well-formed classification answer however its adapter is trained. This asks a base
questions of every kind its pretraining covers, on scenes drawn with a seed its pretraining
never used, and scores each kind: exact answer for text, IoU at least 0.5 for boxes, every
coordinate within 60 of 1000 for points.

It also measures whether the answers depend on the image at all: the base's loss on each
expected answer with the scene's own image against the loss with another scene's image. A base
that reads its images has a clearly lower loss with its own; equal losses mean the language
model answers from the text alone, and no adapter trained on a hospital's images starts from
a base that sees them. Prints a table and writes JSON.

    python benchmarks/tiny_base_skills.py [--base DIR] [--questions 160]
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections import Counter
from pathlib import Path

import torch

from shared_model.inference import Answerer, load_answerer
from shared_model.inputs import collate, encode_example, encode_question
from shared_model.tiny import TINY_CANVAS, TINY_SLICES, ensure_tiny_base
from shared_model.tiny.build import TinyShape
from shared_model.tiny.scenes import Conversation, conversation

PROBE_SEED = 12345
"""Not the pretraining seed: every scene asked about is new to the base."""

KINDS = {
    "lookup": ("What is option", "项是什么"),
    "find": ("Which option says", "哪个选项是“"),
    "box": ("bounding box", "框出"),
    "point": ("centre point", "中心的坐标"),
    "describe": ("Describe", "描述"),
}


def kind_of(question: str) -> str:
    """The pretraining kind of a question (``choice`` for option and yes/no questions)."""
    for kind, markers in KINDS.items():
        if any(marker in question for marker in markers):
            return kind
    return "choice"


def numbers(text: str) -> list[int]:
    """The integers after the last ``<|box_start|>`` (the whole text when there is none)."""
    return [int(n) for n in re.findall(r"\d+", text.split("<|box_start|>")[-1])]


def box_iou(got: list[int], want: list[int]) -> float:
    """IoU of two boxes given as 4 (2D) or 6 (3D, compared in-plane) grid numbers."""
    if len(got) != len(want) or len(got) not in (4, 6):
        return 0.0
    a, b = ([v[0], v[1], v[3], v[4]] if len(v) == 6 else v for v in (got, want))
    overlap_x = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    overlap_y = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = overlap_x * overlap_y

    def area(box: list[int]) -> int:
        return max(0, box[2] - box[0]) * max(0, box[3] - box[1])

    return inter / max(1, area(a) + area(b) - inter)


def correct(kind: str, got: str, want: str) -> bool:
    """Whether an answer counts for its kind."""
    if kind == "box":
        return box_iou(numbers(got), numbers(want)) >= 0.5
    if kind == "point":
        a, b = numbers(got), numbers(want)
        return len(a) == len(b) > 0 and max(abs(x - y) for x, y in zip(a, b, strict=True)) <= 60
    return got == want


def ask(answerer: Answerer, chats: list[Conversation], batch: int = 16) -> list[str]:
    """Greedy answers of the base to the conversations' questions."""
    tokenizer = answerer.processor.tokenizer
    answers = []
    for start in range(0, len(chats), batch):
        part = chats[start : start + batch]
        encoded = [
            encode_question(answerer.processor, [c.image], c.question, canvas=TINY_CANVAS)
            for c in part
        ]
        inputs = collate(encoded, tokenizer.pad_token_id, padding_side="left").inputs
        inputs.pop("labels")
        with torch.no_grad():
            out = answerer.model.generate(
                **inputs, max_new_tokens=48, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
        for text in tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :]):
            answers.append(text.split("<|im_end|>")[0].split(tokenizer.pad_token)[0].strip())
    return answers


def answer_loss(answerer: Answerer, chats: list[Conversation], images: list) -> float:
    """Mean token loss of the expected answers of ``chats`` asked about ``images``."""
    encoded = [
        encode_example(
            answerer.processor, [image], c.question, c.answer, canvas=TINY_CANVAS, max_length=512
        )
        for c, image in zip(chats, images, strict=True)
    ]
    inputs = collate(encoded, answerer.processor.tokenizer.pad_token_id).inputs
    with torch.no_grad():
        return answerer.model(**inputs).loss.item()


def image_use(answerer: Answerer, chats: list[Conversation]) -> dict[str, dict[str, float]]:
    """Per kind, the answer loss with each scene's own image and with the next scene's image."""
    by_kind: dict[str, list[int]] = {}
    for index, chat in enumerate(chats):
        by_kind.setdefault(kind_of(chat.question), []).append(index)
    losses = {}
    for kind, indices in sorted(by_kind.items()):
        own = [chats[i] for i in indices if chats[i].image.ndim == 3]
        others = [own[(j + 1) % len(own)].image for j in range(len(own))]
        losses[kind] = {
            "own_image_loss": answer_loss(answerer, own, [c.image for c in own]),
            "other_image_loss": answer_loss(answerer, own, others),
        }
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=None, help="default: the cached tiny base")
    parser.add_argument("--questions", type=int, default=160)
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/tiny_base_skills.json")
    )
    args = parser.parse_args()
    base = args.base or ensure_tiny_base(progress=False)
    rng = random.Random(PROBE_SEED)
    shapes = TinyShape().scene_shapes  # scenes like those of its pretraining
    chats = [
        conversation(rng, TINY_CANVAS, TINY_SLICES if index % 4 == 3 else None, shapes)
        for index in range(args.questions)
    ]
    asked, right = Counter(), Counter()
    examples: dict[str, list[dict[str, str]]] = {}
    answerer = load_answerer(base, TINY_CANVAS)
    for chat, answer in zip(chats, ask(answerer, chats), strict=True):
        kind = kind_of(chat.question)
        asked[kind] += 1
        right[kind] += correct(kind, answer, chat.answer)
        examples.setdefault(kind, [])
        if len(examples[kind]) < 3:
            examples[kind].append({"answer": answer, "expected": chat.answer})
    losses = image_use(answerer, chats)
    rows = [
        {
            "kind": kind,
            "asked": asked[kind],
            "right": right[kind],
            "rate": right[kind] / asked[kind],
            **losses[kind],
        }
        for kind in sorted(asked)
    ]
    print(
        f"base: {base.name}\n\n| kind | asked | right | rate | loss, own image | "
        "loss, another scene's image |\n| --- | --- | --- | --- | --- | --- |"
    )
    for row in rows:
        print(
            f"| {row['kind']} | {row['asked']} | {row['right']} | {row['rate']:.2f} | "
            f"{row['own_image_loss']:.3f} | {row['other_image_loss']:.3f} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"base": base.name, "rows": rows, "examples": examples}, indent=1)
    )
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
