"""The model spec: which base, which adapters per stage, and the input limits every party uses.

Only the base's shape and the adapter layout enter the fingerprint; training knobs (learning
rate, steps) never do, so a coordinator can change them without breaking a consortium.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import tomli_w
from safetensors import safe_open

STAGES = ("align", "instruct")

VISION_BLOCK_TARGETS = r".*visual\.blocks\.\d+\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)"
LANGUAGE_TARGETS = (
    r".*language_model\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)|"
    r"mlp\.(gate_proj|up_proj|down_proj))"
)


LORA_A = ".lora_A."
"""What names a LoRA ``A`` matrix, as a parameter (``...lora_A.default.weight``) and as an
exchanged array (``...lora_A.weight``)."""


LISTED_FIELDS = ("modules_to_save", "clip_groups", "answer_vocabulary")
"""The :class:`LoraSpec` fields that are tuples of strings (TOML and JSON lists)."""


@dataclass(frozen=True)
class LoraSpec:
    """LoRA layout of one stage (peft ``LoraConfig`` fields FedUMIT fixes per consortium).

    Parameters
    ----------
    rank, alpha, dropout:
        LoRA rank ``r``, scaling numerator ``lora_alpha`` and ``lora_dropout``.
    target_modules:
        Regular expression over module names (peft's full-match semantics).
    modules_to_save:
        Modules trained in full beside the adapters (the patch merger).
    frozen_a:
        Train only LoRA's ``B`` matrices; every ``A`` keeps the coordinator's seeded initial
        value (FFA-LoRA, Sun et al. 2024, arXiv 2403.12313). Half the LoRA parameters carry
        DP noise, and the federated average of the sites' ``B A`` is exactly the product of
        their averaged ``B`` and the shared ``A``.
    clip_groups:
        Regular expressions over trainable parameter names (``re.search``) that split DP-SGD's
        per-unit clipping into groups: a parameter belongs to the first that matches, the
        unmatched ones form one more group, and each of the ``G`` groups is clipped to
        ``C / sqrt(G)``, so a unit's whole clipped gradient still has norm at most ``C`` and
        the noise and accounting are unchanged (group-wise clipping, McMahan et al. 2018,
        arXiv 1710.06963). Empty: one group, every parameter clipped together (the tiny
        base's measured choice, :func:`shared_model.tiny.tiny_spec`).
    answer_vocabulary:
        Words and format strings whose tokens' output rows (``lm_head``) train in full beside
        the LoRA matrices (peft's trainable tokens; :mod:`shared_model.answer_rows`). The
        consortium's public answer vocabulary (option names, yes/no, digits, box syntax), never
        read from a site's records. Empty: ``lm_head`` stays frozen.
    """

    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    target_modules: str = LANGUAGE_TARGETS
    modules_to_save: tuple[str, ...] = ("merger",)
    frozen_a: bool = False
    clip_groups: tuple[str, ...] = ()
    answer_vocabulary: tuple[str, ...] = ()

    def layout(self) -> dict[str, Any]:
        """The fields as plain data; ``frozen_a``, ``clip_groups`` and ``answer_vocabulary``
        only when set, so that the fingerprints of layouts written before they existed stay
        the same."""
        data = asdict(self)
        for listed in LISTED_FIELDS:
            data[listed] = list(getattr(self, listed))
        for optional in ("frozen_a", "clip_groups", "answer_vocabulary"):
            if not data[optional]:
                del data[optional]
        return data

    def __post_init__(self) -> None:
        if self.rank <= 0 or self.alpha <= 0:
            raise ValueError(f"LoRA rank and alpha must be positive, got {self.rank}, {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        for pattern in self.clip_groups:
            try:
                re.compile(pattern)
            except re.error as error:
                message = f"clip group {pattern!r} is not a regular expression: {error}"
                raise ValueError(message) from error
        blank = [word for word in self.answer_vocabulary if not word.strip()]
        if blank:
            raise ValueError(f"answer_vocabulary holds {len(blank)} empty entries")
        if self.answer_vocabulary and re.fullmatch(self.target_modules, "lm_head"):
            raise ValueError(
                "answer_vocabulary trains lm_head's rows, so target_modules must not put LoRA "
                "on lm_head as well (peft cannot stack the two on one layer)"
            )


@dataclass(frozen=True)
class ModelSpec:
    """Everything a site and the server must agree on about the model.

    Parameters
    ----------
    base:
        Local directory of a Qwen2-VL checkpoint (``from_pretrained`` layout).
    align, instruct:
        LoRA layout of stage 1 (vision blocks + merger) and stage 2 (language model + merger).
    canvas:
        Side in pixels of the square every image is fitted into (a multiple of 28).
    volume_slices:
        Slices per 3D volume (even: Qwen2-VL groups two frames per temporal patch).
    max_text_length:
        Longest tokenized example; longer answers are truncated.
    """

    base: Path
    align: LoraSpec = field(
        default_factory=lambda: LoraSpec(rank=16, alpha=32.0, target_modules=VISION_BLOCK_TARGETS)
    )
    instruct: LoraSpec = field(default_factory=LoraSpec)
    canvas: int = 448
    volume_slices: int = 8
    max_text_length: int = 512

    def __post_init__(self) -> None:
        if self.canvas <= 0 or self.canvas % 28:
            raise ValueError(f"canvas must be a positive multiple of 28, got {self.canvas}")
        if self.volume_slices <= 0 or self.volume_slices % 2:
            raise ValueError(f"volume_slices must be positive and even, got {self.volume_slices}")
        if self.max_text_length < 32:
            raise ValueError(f"max_text_length is too small: {self.max_text_length}")

    def stage(self, name: str) -> LoraSpec:
        """The LoRA layout of stage ``name``."""
        if name not in STAGES:
            raise ValueError(f"unknown stage {name!r}; stages are {STAGES}")
        return self.align if name == "align" else self.instruct

    def with_base(self, base: str | Path) -> ModelSpec:
        """The same spec over another base directory."""
        return replace(self, base=Path(base))

    def layout(self) -> dict[str, Any]:
        """The parts of the spec that change the exchanged arrays (JSON-safe)."""
        return {
            "align": self.align.layout(),
            "instruct": self.instruct.layout(),
            "canvas": self.canvas,
            "volume_slices": self.volume_slices,
        }

    def fingerprint(self) -> str:
        """Stable hash of the base weights' names/shapes/dtypes and the adapter layout.

        Reads only safetensors headers, never weight bytes, so it is cheap on a 2B checkpoint.
        """
        digest = hashlib.sha256()
        digest.update(json.dumps(base_weight_layout(self.base), sort_keys=True).encode())
        digest.update(json.dumps(self.layout(), sort_keys=True).encode())
        return digest.hexdigest()[:16]

    @classmethod
    def from_toml(cls, path: str | Path) -> ModelSpec:
        """Load a spec from TOML; a relative ``base`` resolves against the file's folder."""
        path = Path(path)
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return cls.from_dict(data.get("model", data), root=path.parent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], root: Path | None = None) -> ModelSpec:
        """Build a spec from plain data (the ``[model]`` table of a TOML file)."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model spec keys {sorted(unknown)}; known: {sorted(known)}")
        if "base" not in data:
            raise ValueError("model spec needs 'base', the checkpoint directory")
        base = Path(data["base"]).expanduser()
        if root is not None and not base.is_absolute():
            base = (root / base).resolve()
        values: dict[str, Any] = {k: v for k, v in data.items() if k not in ("base", *STAGES)}
        for stage in STAGES:
            if stage in data:
                stage_data = dict(data[stage])
                for listed in LISTED_FIELDS:
                    if listed in stage_data:
                        stage_data[listed] = tuple(stage_data[listed])
                values[stage] = replace(cls(base=base).stage(stage), **stage_data)
        return cls(base=base, **values)

    def to_dict(self) -> dict[str, Any]:
        """Plain data that :meth:`from_dict` reads back."""
        return {"base": str(self.base), **self.layout(), "max_text_length": self.max_text_length}

    def write_toml(self, path: str | Path, base_relative_to: Path | None = None) -> Path:
        """Write the spec as a ``[model]`` TOML table (``base`` relative when possible)."""
        path = Path(path)
        data = self.to_dict()
        if base_relative_to is not None:
            data["base"] = os.path.relpath(self.base, base_relative_to)
        path.write_text(tomli_w.dumps({"model": data}), encoding="utf-8")
        return path


def base_weight_layout(base: Path) -> list[tuple[str, list[int], str]]:
    """Sorted (name, shape, dtype) of every tensor in a checkpoint's safetensors files."""
    files = sorted(Path(base).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors weights in base checkpoint directory {base}")
    layout = []
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open has no __iter__
                tensor_slice = handle.get_slice(name)
                layout.append((name, list(tensor_slice.get_shape()), tensor_slice.get_dtype()))
    return sorted(layout)


SPEC_FILE = "fedumit-model.toml"
"""The model spec's file name beside a base's weights (what sites point ``[model] spec`` at)."""


def write_spec_beside(spec: ModelSpec, directory: Path) -> Path:
    """Write ``spec`` to ``directory/fedumit-model.toml`` unless the same spec is already there
    (atomic: a concurrent reader sees the old file or the new one); returns the path."""
    path = directory / SPEC_FILE
    wanted = directory / f".{SPEC_FILE}.{os.getpid()}"
    spec.write_toml(wanted, base_relative_to=directory)
    if path.is_file() and path.read_bytes() == wanted.read_bytes():
        wanted.unlink()
    else:
        wanted.replace(path)
    return path
