"""``fedumit infer``: the command (heavy imports wait until it runs; see :mod:`fedumit.infer`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from shared_model.tasks import TASK_NAMES


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``fedumit infer``."""
    infer = commands.add_parser(
        "infer", help="answer a question about a DICOM, NIfTI or PNG/JPEG file with an export"
    )
    infer.add_argument("--model", type=Path, required=True, help="export directory")
    source = infer.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--image",
        type=Path,
        action="append",
        help="DICOM file or series folder, NIfTI, PNG or JPEG (twice for compare)",
    )
    source.add_argument(
        "--manifest", type=Path, help="an archive's manifest.jsonl: answer every record"
    )
    infer.add_argument("--task", choices=TASK_NAMES, help="task of the question (--image)")
    infer.add_argument("--lang", choices=("en", "zh"), default="en")
    infer.add_argument("--question", help="the question (vqa, classification)")
    infer.add_argument("--options", help="comma-separated options (closed vqa, classification)")
    infer.add_argument("--target", help="finding to box (detection) or landmark to point at")
    infer.add_argument("--modality", help="CT, MR, CR ... (windowing of NIfTI volumes)")
    infer.add_argument("--json", action="store_true", help="print one JSON object")
    infer.add_argument("--out", type=Path, help="predictions JSONL (--manifest)")
    infer.add_argument("--split", choices=("train", "val", "test"), help="only this split")
    infer.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    infer.add_argument("--batch-size", type=int, default=8)
    infer.add_argument("--max-new-tokens", type=int, default=96)
    infer.set_defaults(handler=_infer)


def _infer(args: argparse.Namespace) -> int:
    from client.archive import UnreadableImage
    from fedumit.infer import QuestionError

    try:
        return _answer(args)
    except (QuestionError, UnreadableImage) as error:
        raise SystemExit(f"fedumit infer: {error}") from error


def _answer(args: argparse.Namespace) -> int:
    from fedumit.infer import answer_image, answer_manifest, load_export

    if args.manifest is not None and args.out is None:
        raise SystemExit("--manifest needs --out predictions.jsonl")
    if args.image is not None and args.task is None:
        raise SystemExit("--image needs --task")
    answerer, info = load_export(args.model, args.device)
    answerer.max_new_tokens = args.max_new_tokens
    canvas, slices = int(info["canvas"]), int(info["volume_slices"])
    if args.manifest is not None:
        metrics = answer_manifest(
            answerer, args.manifest, args.out, canvas, slices, args.split, args.batch_size
        )
        for key, value in metrics.items():
            print(f"{key:48s} {value:.4f}")
        return 0
    options = [o.strip() for o in args.options.split(",")] if args.options else None
    result = answer_image(
        answerer,
        args.image,
        args.task,
        args.lang,
        canvas=canvas,
        slices=slices,
        question=args.question,
        options=options,
        target=args.target,
        modality=args.modality,
    )
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print(f"answer: {result['answer']}")
        print(f"parsed: {json.dumps(result['parsed'], ensure_ascii=False)}")
    return 0
