"""``fedumit model``: build the embedded tiny base and print a checkpoint's fingerprint."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register the ``model`` command group."""
    model = commands.add_parser(
        "model", help="base checkpoints: build the tiny or the full-shape one, fingerprint"
    )
    model_commands = model.add_subparsers(dest="model_command", required=True, metavar="SUBCOMMAND")

    tiny = model_commands.add_parser(
        "tiny", help="write a small pretrained random-init Qwen2-VL checkpoint (seeded)"
    )
    tiny.add_argument(
        "--out", type=Path, default=None, help="directory to write (default: the user cache)"
    )
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--pretrain-steps", type=int, default=None, help="override pretraining")
    tiny.add_argument(
        "--public-steps",
        type=int,
        default=None,
        help="override the public phase's steps (0: scenes only, no public archive)",
    )
    tiny.add_argument(
        "--volume-slices",
        type=int,
        default=None,
        help="pretrain on volumes of this many slices and read them so (default: the spec's, 4)",
    )
    tiny.set_defaults(handler=_tiny)

    full = model_commands.add_parser(
        "full-shape",
        help="write a random-init base of Qwen2-VL-2B-Instruct's shape (seeded; bf16, 4.4 GB): "
        "for testing shapes, memory and speed only",
    )
    full.add_argument(
        "--out", type=Path, default=None, help="directory to write (default: the user cache)"
    )
    full.add_argument("--seed", type=int, default=0)
    full.set_defaults(handler=_full_shape)

    fingerprint = model_commands.add_parser(
        "fingerprint", help="print the consortium fingerprint of a model spec"
    )
    fingerprint.add_argument("--spec", type=Path, help="model spec TOML")
    fingerprint.add_argument("--tiny", type=Path, help="or: a tiny base directory")
    fingerprint.add_argument("--full-shape", type=Path, help="or: a full-shape base directory")
    fingerprint.set_defaults(handler=_fingerprint)


def _tiny(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from shared_model.spec import write_spec_beside
    from shared_model.tiny import ensure_tiny_base, tiny_spec
    from shared_model.tiny.build import TinyShape, build_tiny_base
    from shared_model.tiny.cache import cached_tiny_base

    if args.volume_slices is not None and (args.volume_slices <= 0 or args.volume_slices % 2):
        raise SystemExit(f"--volume-slices must be positive and even, got {args.volume_slices}")
    shape = replace(TinyShape(), seed=args.seed)
    if args.pretrain_steps is not None:
        shape = replace(shape, pretrain_steps=args.pretrain_steps)
    if args.public_steps is not None:
        shape = replace(shape, public_steps=args.public_steps)
    if args.volume_slices is not None:
        shape = replace(shape, volume_slices=args.volume_slices)
    if args.out is None:
        out = ensure_tiny_base(cached_tiny_base(shape))
    else:
        out = build_tiny_base(args.out, shape)
    spec = tiny_spec(out, shape.volume_slices)  # volumes read as the base was pretrained
    if args.volume_slices is not None:
        write_spec_beside(spec, out)
    print(f"tiny Qwen2-VL base at {out} (fingerprint {spec.fingerprint()})")
    return 0


def _full_shape(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from shared_model.full_shape import PURPOSE, FullShape, ensure_full_shape_base, full_shape_spec

    out = ensure_full_shape_base(args.out, replace(FullShape(), seed=args.seed))
    print(PURPOSE)
    print(f"full-shape Qwen2-VL base at {out} (fingerprint {full_shape_spec(out).fingerprint()})")
    return 0


def _fingerprint(args: argparse.Namespace) -> int:
    from shared_model.full_shape import full_shape_spec
    from shared_model.spec import ModelSpec
    from shared_model.tiny import tiny_spec

    given = [a for a in (args.spec, args.tiny, args.full_shape) if a is not None]
    if len(given) != 1:
        raise SystemExit("give exactly one of --spec, --tiny or --full-shape")
    if args.spec:
        spec = ModelSpec.from_toml(args.spec)
    else:
        spec = tiny_spec(args.tiny) if args.tiny else full_shape_spec(args.full_shape)
    print(spec.fingerprint())
    return 0
