"""The FedUMIT ``ServerApp``: read the run config, run both stages, export the global model."""

from __future__ import annotations

import logging
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from server.checkpoints import load_checkpoint
from server.config import RunConfig
from server.coordinator import Coordinator
from server.export import export_run
from server.folder_lock import driving
from server.launch_claim import claim_launch
from server.run_folder import RunFolder, new_run_id
from shared_model.spec import ModelSpec

log = logging.getLogger(__name__)


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run every stage of the consortium's run and export the result."""
    config = RunConfig.from_flat(context.run_config)
    run(grid, config, flower_run=context.run_id)


def resolve_spec(model_spec: str) -> ModelSpec:
    """The run's model spec; empty means the embedded tiny base (from the user-level cache,
    built there when missing)."""
    if model_spec:
        return ModelSpec.from_toml(model_spec)
    from shared_model.tiny import SPEC_FILE, ensure_tiny_base

    return ModelSpec.from_toml(ensure_tiny_base() / SPEC_FILE)


def run(grid: Grid, config: RunConfig, flower_run: int | None = None) -> RunFolder:
    """Create or resume the run folder, run the stages, export when every round completed;
    a second ``ServerApp`` of one launch (``launch-id``) ends without training."""
    if config.resume:
        folder = RunFolder(Path(config.resume))
        if not (folder.root / "config.json").is_file():
            raise FileNotFoundError(f"cannot resume: {folder.root} is not a run folder")
        config = config.resuming()
        log.info("resuming %s with the config it started with", folder.root)
    else:
        folder = RunFolder(Path(config.run_dir) / (config.run_id or new_run_id()))
    if config.launch_id:
        earlier = claim_launch(folder.root.parent, config.launch_id, flower_run, folder.root)
        if earlier is not None:
            driven = RunFolder(Path(earlier.get("folder", folder.root)))
            log.warning(
                "launch %s was started twice (Flower's CLI retried its request); Flower run "
                "%s drives it in %s, so this run (%s) ends without training",
                config.launch_id,
                earlier.get("flower_run", "of its first start"),
                driven.root,
                flower_run,
            )
            return driven
    with driving(folder.root, wait_s=config.round_timeout):
        coordinate(grid, config, folder)
    return folder


def coordinate(grid: Grid, config: RunConfig, folder: RunFolder) -> None:
    """Run the stages into ``folder`` (its coordinator lock held) and export when complete."""
    spec = resolve_spec(config.model_spec)
    folder.create(
        {"run": config.to_dict(), "model": spec.to_dict(), "fingerprint": spec.fingerprint()}
    )
    log.info("run %s (fingerprint %s), folder %s", folder.run_id, spec.fingerprint(), folder.root)
    stage1 = None
    if config.stage1_adapter:
        stage1 = load_checkpoint(Path(config.stage1_adapter), spec.fingerprint()).arrays
    outcome = Coordinator(config, spec, folder).run(grid, stage1=stage1)
    if outcome.completed and len(outcome.skipped) == len(config.stages):
        log.error("nothing was trained: every stage was skipped (%s)", ", ".join(outcome.skipped))
    elif outcome.completed:
        export_run(folder, folder.root / "export")
    else:
        log.error("run stopped early: %s", outcome.stopped_reason)
