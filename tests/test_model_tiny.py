"""The tiny base: deterministic build, real from_pretrained, both stages train on 2D and 3D."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

from shared_model.adapters import StageAdapter
from shared_model.inputs import collate, encode_example
from shared_model.loading import load_base
from shared_model.tiny.build import TinyShape, build_tiny_base
from shared_model.tiny.tokenizer import SPECIAL_TOKENS
from tests.conftest import lesion_image, lesion_volume

SMALL = TinyShape(
    pretrain_steps=3, pretrain_batch=4, warmup_steps=1, public_patients=4, public_steps=2
)


def digest(directory: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if p.is_file()
    }


def test_build_is_deterministic(tmp_path: Path) -> None:
    first = digest(build_tiny_base(tmp_path / "a", SMALL, progress=False))
    second = digest(build_tiny_base(tmp_path / "b", SMALL, progress=False))
    assert "model.safetensors" in first and "tokenizer.json" in first
    assert first == second


def test_loads_with_plain_from_pretrained(tiny_base: Path) -> None:
    model = Qwen2VLForConditionalGeneration.from_pretrained(tiny_base)
    processor = AutoProcessor.from_pretrained(tiny_base)
    tokenizer = processor.tokenizer
    for token in SPECIAL_TOKENS:
        assert len(tokenizer(token, add_special_tokens=False)["input_ids"]) == 1, token
    assert model.config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert model.config.video_token_id == tokenizer.convert_tokens_to_ids("<|video_pad|>")
    for text in ("Is there a nodule? 1:yes 2:no", "图像中有结节吗？1：是 2：否"):
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.decode(ids) == text
    assert len(tokenizer("图像中有结节吗")["input_ids"]) < len("图像中有结节吗".encode())


def stage_parameter(name: str, stage: str) -> bool:
    if "merger" in name:
        return True
    if stage == "align":
        return "visual.blocks" in name and "lora_" in name
    return "language_model" in name and "lora_" in name


@pytest.mark.parametrize("stage", ["align", "instruct"])
@pytest.mark.parametrize("volume", [False, True], ids=["2d", "3d"])
def test_forward_backward_touches_only_the_stage(tiny_spec, stage: str, volume: bool) -> None:
    model, processor = load_base(tiny_spec)
    adapter = StageAdapter.attach(model, tiny_spec, stage, init_lora_weights=False)
    image = lesion_volume("left") if volume else lesion_image("left")
    example = encode_example(
        processor, [image], "Where is the lesion?", "left", canvas=112, max_length=384
    )
    if volume:
        assert example.video_grid_thw.tolist() == [[2, 8, 8]]
    else:
        assert example.image_grid_thw.tolist() == [[1, 8, 8]]
    batch = collate([example, example], processor.tokenizer.pad_token_id)
    adapter.model(**batch.inputs).loss.backward()
    with_grad = {n for n, p in adapter.model.named_parameters() if p.grad is not None}
    trainable = adapter.trainable_parameters()
    assert len(with_grad) == len(trainable) == len(adapter.names)
    assert all(stage_parameter(name, stage) for name, _ in trainable)
    assert all(parameter.grad.abs().sum() > 0 for _, parameter in trainable)
    assert not any(
        p.requires_grad
        for n, p in adapter.model.named_parameters()
        if "lora" not in n and "modules_to_save" not in n
    )


def test_cache_builds_once_per_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from shared_model.tiny.cache import cache_root, cached_tiny_base, recipe_key

    monkeypatch.setenv("FEDUMIT_CACHE", str(tmp_path / "cache"))
    assert cache_root() == tmp_path / "cache"
    first = cached_tiny_base(SMALL, progress=False)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert cached_tiny_base(SMALL, progress=False) == first  # found, not rebuilt
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    assert first.name == recipe_key(SMALL) != recipe_key(replace(SMALL, seed=1))
    assert not list(first.parent.glob("*.partial"))


def test_recipe_key_follows_the_code_not_its_comments_or_docstrings(tmp_path: Path) -> None:
    """Rewording a docstring or a comment of a recipe module keeps every machine's cached base;
    changing a line of code gets a new one."""
    import shutil

    import shared_model.tiny.cache as cache

    for source in cache.recipe_sources():
        copy = tmp_path / source.relative_to(cache.PROJECT_ROOT)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, copy)
    key = cache.recipe_key(SMALL, tmp_path)
    assert key == cache.recipe_key(SMALL)
    build = tmp_path / "shared_model" / "tiny" / "build.py"
    code = build.read_text(encoding="utf-8")
    reworded = code.replace('class TinyShape:\n    """', 'class TinyShape:\n    """Reworded. ', 1)
    assert reworded != code
    build.write_text(reworded + '\n# a new comment\nMEASURED = 1\n"""and its docstring"""\n')
    with_constant = cache.recipe_key(SMALL, tmp_path)
    build.write_text(reworded + "\n# a new comment\n")
    assert cache.recipe_key(SMALL, tmp_path) == key
    assert with_constant != key  # a new statement is code
    build.write_text(code.replace("learning_rate: float = 1e-3", "learning_rate: float = 2e-3"))
    assert cache.recipe_key(SMALL, tmp_path) != key
    build.write_text(code)
    assert cache.recipe_key(SMALL, tmp_path) == key
    # the public phase's images come from the simulations' phantoms: their code is recipe too
    phantoms = tmp_path / "simulations" / "phantoms.py"
    scanner = phantoms.read_text(encoding="utf-8")
    assert "PUBLIC_SCANNER = Scanner(border=1 / 6, noise=2.0)" in scanner
    phantoms.write_text(scanner.replace("noise=2.0)", "noise=3.0)"))
    assert cache.recipe_key(SMALL, tmp_path) != key


def test_full_shape_recipe_key_follows_its_shape() -> None:
    from dataclasses import replace

    from shared_model.full_shape import FullShape, recipe_key

    assert recipe_key(FullShape()) == recipe_key(FullShape())
    assert recipe_key(FullShape()) != recipe_key(replace(FullShape(), text_layers=2))


def test_a_base_of_deeper_volumes_is_built_and_read_at_its_slices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from fedumit.cli import main
    from shared_model.spec import SPEC_FILE, ModelSpec

    monkeypatch.setenv("FEDUMIT_CACHE", str(tmp_path))
    with pytest.raises(SystemExit, match="positive and even"):
        main(["model", "tiny", "--pretrain-steps", "2", "--volume-slices", "5"])
    assert not (tmp_path / "tiny-base").exists(), "nothing is built for a refused count"
    quick = ["--pretrain-steps", "2", "--public-steps", "0"]
    assert main(["model", "tiny", *quick, "--volume-slices", "8"]) == 0
    (built,) = [d for d in (tmp_path / "tiny-base").iterdir() if d.is_dir()]
    recipe = json.loads((built / "recipe.json").read_text(encoding="utf-8"))
    assert recipe["shape"]["volume_slices"] == 8 and recipe["shape"]["pretrain_steps"] == 2
    assert recipe["shape"]["public_steps"] == 0
    spec = ModelSpec.from_toml(built / SPEC_FILE)
    assert spec.volume_slices == 8
    assert spec.fingerprint() in capsys.readouterr().out


def test_volumes_are_read_at_the_slices_asked_for(tiny_base, tiny_spec) -> None:
    from shared_model.tiny import tiny_spec as spec_of

    deeper = spec_of(tiny_base, 4 * tiny_spec.volume_slices)
    assert deeper.volume_slices == 4 * tiny_spec.volume_slices
    assert deeper.canvas == tiny_spec.canvas and deeper.instruct == tiny_spec.instruct
    assert spec_of(tiny_base) == tiny_spec
    with pytest.raises(ValueError, match="even"):
        spec_of(tiny_base, 3)
