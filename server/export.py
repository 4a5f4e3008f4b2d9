"""``fedumit export``: a run's last global adapters merged into the base, with a model card."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from server.checkpoints import latest_checkpoint
from server.model_card import model_card
from server.run_folder import RunFolder
from shared_model.export import export_merged
from shared_model.spec import ModelSpec

log = logging.getLogger(__name__)


def spec_of_run(folder: RunFolder) -> ModelSpec:
    """The model spec a run was started with (from its resolved config)."""
    return ModelSpec.from_dict(folder.config()["model"])


def export_run(folder: RunFolder, out: Path) -> Path:
    """Merge the latest ``align`` and ``instruct`` checkpoints of a run and save them in ``out``
    (written beside it, then renamed into place)."""
    spec = spec_of_run(folder)
    fingerprint = spec.fingerprint()
    align = latest_checkpoint(folder.checkpoints, "align", fingerprint)
    instruct = latest_checkpoint(folder.checkpoints, "instruct", fingerprint)
    if align is None and instruct is None:
        raise FileNotFoundError(f"run {folder.root} has no checkpoint to export")
    stage1 = folder.config()["run"].get("stage1_adapter")
    if align is None and stage1:
        from server.checkpoints import load_checkpoint

        align = load_checkpoint(Path(stage1), fingerprint)
    card = model_card(
        run_id=folder.run_id,
        base=str(spec.base),
        fingerprint=fingerprint,
        records=folder.metrics(),
        config=folder.config()["run"],
    )
    log.info("exporting run %s to %s", folder.run_id, out)
    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    export_merged(
        spec,
        partial,
        align_arrays=align.arrays if align else None,
        instruct_arrays=instruct.arrays if instruct else None,
        model_card=card,
    )
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)  # readers never see a half-written export
    return out
