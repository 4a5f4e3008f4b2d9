"""Seconds per step and peak memory at Qwen2-VL-2B-Instruct's shape, DP and not, per stage.

Samples: 2D images of 64, 256 and 768 visual tokens and a 32-slice 3D series, each a synthetic
record (random pixels, a short question and answer) fed through the site trainer's own path
(``LocalTrainer.train``: token-budget micro-batches, gradient checkpointing, per-sample
gradients, streaming clipping). One logical step per case.

On the CPU the model keeps every width of the real one (1536 / 8960 / vocabulary 151,936;
vision 1280 with 16 heads) but ``--text-layers`` / ``--vision-depth`` layers (default 1 and 1:
the run then fits 20 minutes on a shared two-core machine, where one step of all 28 + 32 layers
takes minutes). The 3D series is 32 slices at 112 pixels there (256 visual tokens; 4,096 at
the spec's 448 pixels). Peak memory on the CPU is
the rise of the process's resident set over the step (``VmHWM`` after resetting it through
``/proc/self/clear_refs``, minus ``VmRSS`` before, after ``malloc_trim`` has handed freed heap
back to the system so that the resident set is what is in use). On CUDA (when present) the
full-depth model runs in bf16 and the peak is ``torch.cuda.max_memory_allocated``.

The memory model (:mod:`shared_model.memory`) predicts each case from its batch, tokens and the
adapter layout; the table shows its prediction beside the measurement and the error, then its
prediction for the full-depth model in bf16 on a GPU (what the sizing table of
``docs/hospital-it.md`` shows). Seconds at full depth are the measured seconds scaled by the
ratio of the step's matmul FLOPs at full and measured depth.

    python benchmarks/full_shape.py [--out benchmarks/results/full_shape.json]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from client.trainer import LocalTrainer, TrainConfig
from shared_model.adapters import StageAdapter
from shared_model.device import resolve_device, weights_dtype
from shared_model.full_shape import FullShape, full_shape_model, full_shape_spec, padded_tokenizer
from shared_model.inputs import IGNORE_INDEX, Encoded
from shared_model.memory import GIB, StepShape, base_parameters, lora_parameters, predict_peak
from shared_model.sample import Geometry, Sample


@dataclass(frozen=True)
class Case:
    """A sample kind: its vision grid ``(t, h, w)`` in patches and how many rows a step has."""

    name: str
    grid: tuple[int, int, int]
    video: bool
    rows: int

    @property
    def visual_tokens(self) -> int:
        t, h, w = self.grid
        return t * h * w // 4


CPU_CASES = (
    Case("2d-64", (1, 16, 16), False, 4),
    Case("2d-256", (1, 32, 32), False, 1),
    Case("2d-768", (1, 48, 64), False, 1),
    Case("3d-32x112px", (16, 8, 8), True, 1),
)
GPU_CASES = (*CPU_CASES[:3], Case("3d-32x448px", (16, 32, 32), True, 1))
STAGES = ("align", "instruct")
STEP_MARGIN = 1.4
"""The GPU sizing's allowance for the memory model's error: on the CPU it under-predicted a
step's memory by up to 36 % over the sixteen cases here (mean |error| 21 %), and a batch sized to
the last gigabyte would not survive an error that large on a GPU."""


def synthetic_record(tokenizer, case: Case, seed: int) -> Encoded:
    """A record of ``case``'s grid: chat prompt with its visual tokens, a 16-token answer."""
    rng = np.random.default_rng(seed)
    pad = "<|video_pad|>" if case.video else "<|image_pad|>"

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    head = ids("<|im_start|>user\n<|vision_start|>")
    visual = [tokenizer.convert_tokens_to_ids(pad)] * case.visual_tokens
    tail = ids("<|vision_end|>Describe the findings.<|im_end|>\n<|im_start|>assistant\n")
    answer = [*rng.integers(200, 2000, 15).tolist(), tokenizer.convert_tokens_to_ids("<|im_end|>")]
    prompt = head + visual + tail
    kind = 2 if case.video else 1
    pixels = torch.from_numpy(rng.standard_normal((int(np.prod(case.grid)), 1176)).astype("f4"))
    grid = torch.tensor([case.grid])
    return Encoded(
        input_ids=torch.tensor(prompt + answer),
        labels=torch.tensor([IGNORE_INDEX] * len(prompt) + answer),
        mm_token_type_ids=torch.tensor(
            [0] * len(head) + [kind] * len(visual) + [0] * (len(tail) + len(answer))
        ),
        pixel_values=None if case.video else pixels,
        image_grid_thw=None if case.video else grid,
        pixel_values_videos=pixels if case.video else None,
        video_grid_thw=grid if case.video else None,
    )


def samples_for(case: Case) -> list[Sample]:
    """Placeholder samples (ids only: the trainer is handed the encoded records)."""
    image = np.zeros((28, 28, 1), np.uint8)
    return [
        Sample(
            f"{case.name}-{n}",
            f"p{n}",
            "caption",
            "en",
            "train",
            (image,),
            (Geometry(1, 1, 1),),
            {},
        )
        for n in range(case.rows)
    ]


class PeakMemory:
    """Peak memory of a block: CUDA's allocator peak, or the process's resident-set rise."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        else:
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap back to the OS: RSS = in use
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self.start = _status_kib("VmRSS") * 1024
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self.peak = _status_kib("VmHWM") * 1024
        self.rise = self.peak - self.start


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def step_flops(shape: FullShape, stage: str, case: Case, tokens: int) -> float:
    """Matmul FLOPs of forward and backward of one row (backward: twice the forward through
    what needs a gradient; the vision blocks only in ``align``)."""
    text = (
        2
        * tokens
        * (base_parameters(shape.truncated(1, 0)) - base_parameters(shape.truncated(0, 0)))
    )
    vision = (
        2
        * int(np.prod(case.grid))
        * (base_parameters(shape.truncated(0, 1)) - base_parameters(shape.truncated(0, 0)))
    )
    text_total = shape.text_layers * text * 3
    vision_total = shape.vision_depth * vision * (3 if stage == "align" else 1)
    return float(text_total + vision_total)


def run(args: argparse.Namespace) -> list[dict]:
    device = resolve_device(args.device)
    full = FullShape()
    shape = full if device.type == "cuda" else full.truncated(args.text_layers, args.vision_depth)
    cases = GPU_CASES if device.type == "cuda" else CPU_CASES
    cases = [c for c in cases if not args.cases or c.name in args.cases]
    tokenizer = padded_tokenizer(full.vocab_size)
    spec = full_shape_spec(Path("."))
    dtype = weights_dtype(device)
    model = full_shape_model(shape, tokenizer, dtype)
    counted = sum(p.numel() for p in model.parameters())
    if counted != base_parameters(shape):
        raise RuntimeError(
            f"memory model counts {base_parameters(shape)} parameters, model has {counted}"
        )
    rows = []
    for stage in STAGES:
        adapter = StageAdapter.attach(
            model, spec, stage, fingerprint="full-shape-benchmark", init_lora_weights=False
        )
        trainable = sum(p.numel() for _, p in adapter.trainable_parameters())
        trainer = LocalTrainer(adapter, _Processor(tokenizer), spec, device)
        for case in cases:
            records = [synthetic_record(tokenizer, case, seed) for seed in range(case.rows)]
            samples = samples_for(case)
            trainer.preload({s.record_id: r for s, r in zip(samples, records, strict=True)})
            for dp in (False, True):
                config = TrainConfig(
                    steps=1,
                    sample_rate=1.0,
                    dp=dp,
                    noise_multiplier=1.0,
                    physical_batch_size=case.rows,
                    token_budget=10**7,
                    gradient_checkpointing=True,
                )
                with PeakMemory(device) as memory:
                    start = time.perf_counter()
                    trainer.train(samples, [s.patient_id for s in samples], config, progress=False)
                    seconds = time.perf_counter() - start
                tokens = len(records[0].input_ids)
                cpu = device.type == "cpu"
                predicted_rise = predicted_step_rise(shape, stage, case, tokens, dp, cpu)
                measured_rise = memory.rise
                on_gpu = _gpu_peak(stage, trainable, tokens, int(np.prod(case.grid)), case.rows)
                scale = step_flops(full, stage, case, tokens) / step_flops(
                    shape, stage, case, tokens
                )
                rows.append(
                    {
                        "stage": stage,
                        "case": case.name,
                        "visual_tokens": case.visual_tokens,
                        "tokens": tokens,
                        "rows": case.rows,
                        "dp": dp,
                        "device": device.type,
                        "text_layers": shape.text_layers,
                        "vision_depth": shape.vision_depth,
                        "seconds": seconds,
                        "seconds_full_depth": seconds * scale,
                        "measured_rise_gib": measured_rise / GIB,
                        "predicted_rise_gib": predicted_rise / GIB,
                        "error": (predicted_rise - measured_rise) / measured_rise,
                        "predicted_gpu_gib": on_gpu["total"] / GIB,
                        "predicted_gpu_terms_gib": {k: v / GIB for k, v in on_gpu.items()},
                    }
                )
                print(_line(rows[-1]), flush=True)
        model = adapter.model.unload()
        del adapter, trainer
        gc.collect()
    return rows


class _Processor:
    """What the trainer reads of a processor when records come encoded: the tokenizer."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer


def gpu_sizing(gpu_gib: float = 24.0, sustained_tflops: float = 100.0) -> list[dict]:
    """Modelled sizing of the full-depth bf16 model on a GPU of ``gpu_gib``: per stage and
    sample kind, the largest physical batch whose predicted peak, its step terms scaled by
    :data:`STEP_MARGIN`, leaves 1.5 GiB for the CUDA context and workspace, that memory, and
    seconds per DP step at ``sustained_tflops`` (matmul FLOPs of forward, recomputation and
    backward; the per-sample gradient einsums are small)."""
    full = FullShape()
    spec = full_shape_spec(Path("."))
    rows = []
    for stage in STAGES:
        trainable = lora_parameters(full, spec.stage(stage).target_modules, spec.stage(stage).rank)
        for case in GPU_CASES:
            tokens = case.visual_tokens + 40
            patches = int(np.prod(case.grid))

            def peak(batch: int, kind=(stage, trainable, tokens, patches)) -> dict[str, float]:
                return with_margin(_gpu_peak(*kind, batch))

            batch = 1
            while batch < 64 and peak(batch + 1)["total"] / GIB <= gpu_gib - 1.5:
                batch += 1
            flops = step_flops(full, stage, case, tokens) * batch * 4 / 3  # + recomputation
            rows.append(
                {
                    "stage": stage,
                    "case": case.name,
                    "visual_tokens": case.visual_tokens,
                    "physical_batch": batch,
                    "tokens_per_batch": batch * tokens,
                    "gpu_gib": peak(batch)["total"] / GIB + 1.5,
                    "seconds_per_step": flops / (sustained_tflops * 1e12),
                    "fits": peak(1)["total"] / GIB <= gpu_gib - 1.5,
                }
            )
    return rows


def with_margin(terms: dict[str, float]) -> dict[str, float]:
    """``terms`` with every step term (all but the weights and the adapter's own state) and
    the total scaled by :data:`STEP_MARGIN`."""
    fixed = ("weights", "trainable")
    scaled = {k: v if k in fixed else v * STEP_MARGIN for k, v in terms.items() if k != "total"}
    return {**scaled, "total": sum(scaled.values())}


def predicted_step_rise(
    shape: FullShape, stage: str, case: Case, tokens: int, dp: bool, cpu: bool
) -> float:
    """What the memory model says a step adds to the loaded model (weights and the adapter's
    own parameters were there before), in the measured run's precision; on the CPU with the
    language model's math-path attention matrices."""
    spec = full_shape_spec(Path("."))
    trainable = lora_parameters(shape, spec.stage(stage).target_modules, spec.stage(stage).rank)
    step = StepShape(case.rows, tokens, int(np.prod(case.grid)), answer_window=17)
    terms = predict_peak(
        shape, stage, step, trainable=trainable, dp=dp, checkpointing=True,
        weight_bytes=4 if cpu else 2, activation_bytes=4 if cpu else 2, attention_matrices=cpu,
    )  # fmt: skip
    return terms["total"] - terms["weights"] - trainable * 4


def retable(path: Path) -> list[dict]:
    """Recompute the memory model's predictions and errors of a saved run's rows."""
    data = json.loads(path.read_text())
    cases = {case.name: case for case in (*CPU_CASES, *GPU_CASES)}
    for row in data["rows"]:
        shape = FullShape().truncated(row["text_layers"], row["vision_depth"])
        case = cases[row["case"]]
        predicted = predicted_step_rise(
            shape, row["stage"], case, row["tokens"], row["dp"], row["device"] == "cpu"
        )
        measured = row["measured_rise_gib"] * GIB
        row["predicted_rise_gib"] = predicted / GIB
        row["error"] = (predicted - measured) / measured
    path.write_text(json.dumps(data, indent=2) + "\n")
    return data["rows"]


def _gpu_peak(stage: str, trainable: int, tokens: int, patches: int, batch: int) -> dict:
    """The memory model's DP step on a GPU: full depth, bf16 weights and activations."""
    step = StepShape(batch, tokens, patches, answer_window=17)
    return predict_peak(
        FullShape(), stage, step, trainable=trainable, dp=True, checkpointing=True,
        weight_bytes=2, activation_bytes=2,
    )  # fmt: skip


def sizing_markdown(rows: list[dict]) -> str:
    """The sizing rows as a Markdown table."""
    lines = [
        "| stage | sample | visual tokens / image | physical batch | tokens / batch "
        "| GPU memory (GiB) | s / physical batch |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['stage']} | {row['case']} | {row['visual_tokens']} | {row['physical_batch']} "
            f"| {row['tokens_per_batch']} | {row['gpu_gib']:.1f} | {row['seconds_per_step']:.2f} |"
        )
    return "\n".join(lines)


HEADER = (
    f"{'stage':<9}{'case':<13}{'tokens':>7}{'rows':>5}{'dp':>4}{'s/step':>8}{'s full':>8}"
    f"{'rise GiB':>10}{'model':>8}{'error':>8}{'GPU GiB':>9}"
)


def _line(row: dict) -> str:
    return (
        f"{row['stage']:<9}{row['case']:<13}{row['tokens']:>7}{row['rows']:>5}"
        f"{'yes' if row['dp'] else 'no':>4}{row['seconds']:>8.1f}{row['seconds_full_depth']:>8.0f}"
        f"{row['measured_rise_gib']:>10.2f}{row['predicted_rise_gib']:>8.2f}{row['error']:>+8.0%}"
        f"{row['predicted_gpu_gib']:>9.1f}"
    )


def _summary(rows: list[dict]) -> None:
    errors = [abs(r["error"]) for r in rows]
    print(f"memory model: mean |error| {np.mean(errors):.0%}, worst {max(errors):.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--text-layers", type=int, default=1)
    parser.add_argument("--vision-depth", type=int, default=1)
    parser.add_argument("--cases", nargs="*", help="only these cases (default: all)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/full_shape.json"))
    parser.add_argument(
        "--retable", type=Path, help="recompute the memory model's column of a saved JSON"
    )
    parser.add_argument(
        "--sizing", type=float, metavar="GIB", help="only print the modelled GPU sizing table"
    )
    args = parser.parse_args()
    if args.sizing:
        print(sizing_markdown(gpu_sizing(args.sizing)))
        return
    if args.retable:
        rows = retable(args.retable)
        print(HEADER)
        print("\n".join(_line(row) for row in rows))
        _summary(rows)
        return
    torch.manual_seed(0)
    started = time.perf_counter()
    print(HEADER, flush=True)
    rows = run(args)
    _summary(rows)
    print(f"wall time {time.perf_counter() - started:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "rows": rows,
                "args": {k: str(v) for k, v in vars(args).items()},
                "shape": asdict(FullShape()),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
