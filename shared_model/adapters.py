"""Stage adapters: attach a stage's LoRA (plus the trainable merger), move its state as arrays,
merge it into the base.

The trainable state of a stage travels as an ordered mapping of names to float32 numpy arrays,
named as in peft's adapter state dict (``get_peft_model_state_dict``), so the names are the same
on every machine and in the saved PEFT adapter files.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

from shared_model.answer_rows import OUTPUT_LAYER, base_answer_token_ids
from shared_model.spec import LORA_A, ModelSpec

ADAPTER = "default"


def _state(model: PeftModel) -> dict[str, torch.Tensor]:
    """The adapter's state: LoRA matrices and saved modules, never a targeted embedding or
    ``lm_head``'s frozen base weights (which peft would include for such a target)."""
    return get_peft_model_state_dict(model, save_embedding_layers=False)


class AdapterMismatchError(ValueError):
    """Arrays that do not fit this model's stage layout; nothing was loaded."""


def lora_config(spec: ModelSpec, stage: str, *, init_lora_weights: bool = True) -> LoraConfig:
    """peft ``LoraConfig`` for ``stage`` of ``spec`` (with its answer vocabulary's output rows
    as trainable tokens, :mod:`shared_model.answer_rows`)."""
    layout = spec.stage(stage)
    rows = None
    if layout.answer_vocabulary:
        ids = base_answer_token_ids(spec.base, layout.answer_vocabulary)
        rows = {OUTPUT_LAYER: ids}
    return LoraConfig(
        r=layout.rank,
        lora_alpha=layout.alpha,
        lora_dropout=layout.dropout,
        target_modules=layout.target_modules,
        modules_to_save=list(layout.modules_to_save),
        init_lora_weights=init_lora_weights,
        trainable_token_indices=rows,
    )


class StageAdapter:
    """A base model with one stage's adapter attached, and its arrays in and out.

    Parameters
    ----------
    model:
        The peft-wrapped model.
    stage:
        ``"align"`` or ``"instruct"``.
    fingerprint:
        The consortium fingerprint (:meth:`ModelSpec.fingerprint`) arrays must carry.
    """

    def __init__(self, model: PeftModel, stage: str, fingerprint: str) -> None:
        self.model, self.stage, self.fingerprint = model, stage, fingerprint
        self._names = list(_state(model).keys())
        by_name = {
            _array_name(name): parameter
            for name, parameter in model.named_parameters()
            if parameter.requires_grad
        }
        fixed = {name for name in self._names if name not in by_name and LORA_A in name}
        if set(by_name) | fixed != set(self._names):
            raise AdapterMismatchError(
                f"trainable parameters and adapter state differ: "
                f"{sorted((set(by_name) | fixed) ^ set(self._names))[:3]}"
            )
        self._parameters = [(name, by_name[name]) for name in self._names if name in by_name]

    @classmethod
    def attach(
        cls,
        base: torch.nn.Module,
        spec: ModelSpec,
        stage: str,
        *,
        fingerprint: str | None = None,
        init_lora_weights: bool = True,
    ) -> StageAdapter:
        """Wrap ``base`` with ``stage``'s LoRA; only the stage's parameters stay trainable."""
        with warnings.catch_warnings():
            # peft reads transformers' deprecated ``is_gradient_checkpointing`` on every wrap:
            # one FutureWarning per site and stage, about neither's code
            warnings.filterwarnings(
                "ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning
            )
            model = get_peft_model(
                base, lora_config(spec, stage, init_lora_weights=init_lora_weights)
            )
        if spec.stage(stage).frozen_a:
            for name, parameter in model.named_parameters():
                if LORA_A in name:
                    parameter.requires_grad_(False)
        return cls(model, stage, fingerprint or spec.fingerprint())

    @property
    def names(self) -> list[str]:
        """Array names in their fixed order."""
        return list(self._names)

    def trainable_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        """The parameters training updates (LoRA matrices, the merger copy), by array name;
        with a frozen-``A`` layout, the ``B`` matrices only (:attr:`arrays` still holds both)."""
        return list(self._parameters)

    def arrays(self) -> OrderedDict[str, np.ndarray]:
        """The stage's trainable state as float32 numpy arrays, in :attr:`names` order."""
        state = _state(self.model)
        return OrderedDict(
            (name, state[name].detach().to("cpu", torch.float32).numpy().copy())
            for name in self._names
        )

    def load_arrays(self, arrays: Mapping[str, np.ndarray], fingerprint: str) -> None:
        """Load arrays after checking fingerprint, names, shapes and dtypes; all or nothing."""
        self.check_arrays(arrays, fingerprint)
        state = {name: torch.from_numpy(np.ascontiguousarray(arrays[name])) for name in self._names}
        result = set_peft_model_state_dict(self.model, state)
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise AdapterMismatchError(f"peft did not place arrays {unexpected[:5]}")

    def check_arrays(self, arrays: Mapping[str, np.ndarray], fingerprint: str) -> None:
        """Raise :class:`AdapterMismatchError` naming the first difference, if any."""
        if fingerprint != self.fingerprint:
            raise AdapterMismatchError(
                f"fingerprint {fingerprint!r} does not match this model's {self.fingerprint!r} "
                f"(different base checkpoint or adapter layout)"
            )
        missing = [n for n in self._names if n not in arrays]
        extra = [n for n in arrays if n not in set(self._names)]
        if missing or extra:
            raise AdapterMismatchError(
                f"stage {self.stage!r} arrays differ in names: missing {missing[:3]}, "
                f"unexpected {extra[:3]}"
            )
        state = _state(self.model)
        for name in self._names:
            array = arrays[name]
            if not isinstance(array, np.ndarray) or array.dtype != np.float32:
                kind = getattr(array, "dtype", type(array).__name__)
                raise AdapterMismatchError(f"array {name!r} must be float32, got {kind}")
            if tuple(array.shape) != tuple(state[name].shape):
                raise AdapterMismatchError(
                    f"array {name!r} has shape {tuple(array.shape)}, "
                    f"expected {tuple(state[name].shape)}"
                )

    def merged(self) -> torch.nn.Module:
        """Fold the adapter into the base weights and return the plain model."""
        return self.model.merge_and_unload()

    def save(self, directory: str | Path) -> Path:
        """Save the adapter in peft's standard format (``adapter_config.json`` + safetensors)."""
        directory = Path(directory)
        self.model.save_pretrained(directory, save_embedding_layers=False)
        return directory


def _array_name(parameter_name: str) -> str:
    """peft's adapter state-dict name of a trainable parameter (adapter name dropped: inside
    the name, or at its end for a trainable-token delta)."""
    name = parameter_name.replace(f".modules_to_save.{ADAPTER}.", ".").replace(f".{ADAPTER}.", ".")
    return name.removesuffix(f".{ADAPTER}")
