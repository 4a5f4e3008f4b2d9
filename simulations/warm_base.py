"""The warm-started base of a simulated run (``--warm-start STEPS``, :mod:`server.warm_start`).

Trained once per base, public archive and setting, under the run's output folder, and reused by
the runs after it; the consortium's model spec then names it, so round 0 of the run's table is
where the federation starts: the base after its public warm start.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from rich.console import Console

from server.warm_start import WarmStart, warm_start
from shared_model.spec import SPEC_FILE, ModelSpec

WARM_BASES = "warm-start"
"""The run folder's subfolder of warm-started bases, one a key."""


def warm_started(
    spec_file: Path, public: Path, settings: WarmStart, out: Path, console: Console
) -> ModelSpec:
    """The spec in ``spec_file`` warm-started on ``public`` by ``settings``: trained now, or
    the one an earlier run left in ``out``."""
    spec = ModelSpec.from_toml(spec_file)
    digest = hashlib.sha256()
    for part in (spec.fingerprint(), _weights_identity(spec.base), repr(settings)):
        digest.update(part.encode())
    digest.update((public / "manifest.jsonl").read_bytes())
    directory = out / WARM_BASES / digest.hexdigest()[:16]
    if (directory / SPEC_FILE).is_file():  # written last: the base is complete
        console.print(f"warm-started base: {directory} (made by an earlier run)")
        return ModelSpec.from_toml(directory / SPEC_FILE)
    console.print(
        f"warm start: {settings.steps} noise-free steps of {settings.batch} public patients "
        f"from {public}, no site's record or budget (server/warm_start.py)"
    )
    return warm_start(spec, public, directory, settings)


def _weights_identity(base: Path) -> str:
    """Which weights ``base`` holds: its weight files' path, size and modification time. The
    fingerprint reads names and shapes only, and a rebuilt base of the same shape (another tiny
    recipe) must not reuse a warm start made over the one before."""
    files = sorted(Path(base).resolve().glob("*.safetensors"))
    return repr([(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files])
