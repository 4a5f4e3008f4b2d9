"""A warm start on public records: a new base, trained on them only, that a consortium names."""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file
from transformers import Qwen2VLForConditionalGeneration

from client.archive import load_site_samples
from client.config import SiteConfig
from fedumit.cli import main
from server.warm_start import UNSCHEDULABLE_STEPS, WarmStart, warm_start
from shared_model.inputs import collate, encode_sample
from shared_model.loading import load_base
from shared_model.spec import SPEC_FILE, ModelSpec
from shared_model.tasks import STAGE_TASKS
from simulations.synthetic import generate_public_archive


@pytest.fixture(scope="module")
def public(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_public_archive(tmp_path_factory.mktemp("warm") / "public", patients=12)


def _loss(model, processor, spec: ModelSpec, archive: Path, split: str) -> float:
    """The mean answer loss of ``archive``'s ``split`` records of the ``instruct`` tasks."""
    with tempfile.TemporaryDirectory() as scratch:
        config = SiteConfig(
            path=archive / "manifest.jsonl", name="p", archive=archive, work_dir=Path(scratch)
        )
        samples, _ = load_site_samples(
            config,
            canvas=spec.canvas,
            slices=spec.volume_slices,
            splits=[split],
            tasks=STAGE_TASKS["instruct"],
        )
    batch = collate(
        [encode_sample(processor, s, spec) for s in samples], processor.tokenizer.pad_token_id
    )
    with torch.no_grad():
        return float(model(**batch.inputs).loss)


def test_a_warm_start_is_a_base_that_learned_the_public_records(
    public: Path, tiny_spec: ModelSpec, tmp_path: Path
) -> None:
    out = tmp_path / "warm"
    warmed = warm_start(
        tiny_spec, public, out, WarmStart(steps=12, batch=8, learning_rate=3e-3), progress=False
    )
    assert warmed.base == out and warmed.layout() == tiny_spec.layout()
    beside = ModelSpec.from_toml(out / SPEC_FILE)
    assert beside.base.resolve() == out.resolve() and beside.fingerprint() == warmed.fingerprint()
    assert "public records only" in (out / "README.md").read_text(encoding="utf-8").lower()
    base, processor = load_base(tiny_spec)
    plain = Qwen2VLForConditionalGeneration.from_pretrained(out).eval()  # no FedUMIT import
    assert _loss(plain, processor, tiny_spec, public, "train") < _loss(
        base, processor, tiny_spec, public, "train"
    )
    weights = dict(plain.named_parameters())
    changed = [n for n, p in base.named_parameters() if not torch.equal(p, weights[n])]
    assert changed and all("language_model" in n or "merger" in n for n in changed)


def test_a_warm_start_repeats_from_its_seed(
    public: Path, tiny_spec: ModelSpec, tmp_path: Path
) -> None:
    def weights(name: str, seed: int) -> dict[str, torch.Tensor]:
        settings = WarmStart(steps=2, batch=4, seed=seed)
        warm_start(tiny_spec, public, tmp_path / name, settings, progress=False)
        return load_file(tmp_path / name / "model.safetensors")

    first, again, other = weights("first", 3), weights("again", 3), weights("other", 4)
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not all(torch.equal(first[name], other[name]) for name in first)


def test_a_warm_start_reads_only_the_training_records(
    public: Path, tiny_spec: ModelSpec, tmp_path: Path
) -> None:
    manifest = public / "manifest.jsonl"
    held_out = [
        line for line in manifest.read_text(encoding="utf-8").splitlines()
        if json.loads(line)["split"] != "train"
    ]  # fmt: skip
    only_held_out = tmp_path / "held-out"
    only_held_out.mkdir()
    (only_held_out / "manifest.jsonl").write_text("\n".join(held_out) + "\n", encoding="utf-8")
    for item in public.iterdir():
        if item.is_dir():
            (only_held_out / item.name).symlink_to(item, target_is_directory=True)
    with pytest.raises(ValueError, match="no training record"):
        warm_start(tiny_spec, only_held_out, tmp_path / "warm", WarmStart(steps=1), progress=False)


def test_warm_start_command_writes_a_base_a_site_can_name(
    public: Path, tiny_base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "warm"
    argv = ["warm-start", "--model-spec", str(tiny_base / SPEC_FILE), "--public-archive"]
    assert main([*argv, str(public), "--out", str(out), "--steps", "2", "--batch", "4"]) == 0
    assert str(out / SPEC_FILE) in capsys.readouterr().out
    assert ModelSpec.from_toml(out / SPEC_FILE).base.resolve() == out.resolve()
    with pytest.raises(SystemExit, match="positive"):
        main([*argv, str(public), "--out", str(tmp_path / "bad"), "--steps", "0"])
    with pytest.raises(SystemExit, match="10 steps cannot be scheduled"):
        main([*argv, str(public), "--out", str(tmp_path / "bad"), "--steps", "10"])


def test_the_step_count_the_one_cycle_rate_cannot_schedule_is_the_one_refused() -> None:
    """The training loop's schedule (a tenth of the steps to warm up) fails at 10 steps only;
    when PyTorch schedules it, this fails and the refusal can go."""
    from torch.optim.lr_scheduler import OneCycleLR

    def schedule(steps: int) -> None:
        optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
        OneCycleLR(optimizer, max_lr=1e-3, total_steps=steps, pct_start=0.1)

    with pytest.raises(ZeroDivisionError):
        schedule(UNSCHEDULABLE_STEPS)
    for steps in (1, 2, 9, 11, 20, 400):
        schedule(steps)


def test_a_simulation_warm_starts_once_per_base_archive_and_setting(
    public: Path, tiny_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import simulations.warm_base as warm_base

    console = Console(file=io.StringIO())
    settings = WarmStart(steps=2, batch=4)
    first = warm_base.warm_started(tiny_base / SPEC_FILE, public, settings, tmp_path, console)
    assert first.base.parent == tmp_path / warm_base.WARM_BASES

    def train_again(*args, **kwargs):
        raise AssertionError("a warm start made by an earlier run was trained again")

    monkeypatch.setattr(warm_base, "warm_start", train_again)
    again = warm_base.warm_started(tiny_base / SPEC_FILE, public, settings, tmp_path, console)
    assert again.base.resolve() == first.base.resolve()
    with pytest.raises(AssertionError, match="trained again"):  # another setting: another base
        warm_base.warm_started(
            tiny_base / SPEC_FILE, public, WarmStart(steps=3, batch=4), tmp_path, console
        )
