"""The tiny base is built once per machine: a user-level cache keyed by its build recipe.

Building the tiny base means training a tokenizer and pretraining the model, minutes on a
laptop CPU. The result depends only on the build recipe: the :class:`TinyShape`, the code that
builds it (the code, not the comments or docstrings, of the modules of this package that make
the tokenizer, the scenes and the weights) and the versions of the libraries that write the
bytes. Their hash names a folder under
``$FEDUMIT_CACHE`` (default ``$XDG_CACHE_HOME/fedumit``, else ``~/.cache/fedumit``); a second
run, a test session or another simulation finds the base there and pays nothing. A changed
recipe gets a new folder; old ones can be deleted at any time.

Concurrent builders take a lock, and a build lands by a rename, so a folder in the cache is
always complete.
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path

# The modules whose code decides the bytes of a build, as globs under the project root (the
# model spec in ``shared_model/tiny/__init__.py`` is written beside the weights on every use,
# so a layout change needs no rebuild). The public phase's archive is written by the
# simulations' phantoms and read by the sites' archive reader, with the tasks' own templates.
RECIPE_MODULES = (
    "shared_model/tiny/build.py",
    "shared_model/tiny/corpus.py",
    "shared_model/tiny/phrasings.py",
    "shared_model/tiny/public.py",
    "shared_model/tiny/scenes.py",
    "shared_model/tiny/tokenizer.py",
    "shared_model/inputs.py",
    "shared_model/tasks/*.py",
    "simulations/imaging_writers.py",
    "simulations/phantoms.py",
    "simulations/synthetic.py",
    "client/archive/*.py",
)
PROJECT_ROOT = Path(__file__).resolve().parents[2]
RECIPE_LIBRARIES = ("torch", "transformers", "tokenizers", "safetensors")


def cache_root() -> Path:
    """``$FEDUMIT_CACHE``, else ``$XDG_CACHE_HOME/fedumit``, else ``~/.cache/fedumit``."""
    explicit = os.environ.get("FEDUMIT_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "fedumit"


def recipe_key(shape, source_root: Path = PROJECT_ROOT) -> str:
    """A short hash of everything that decides a tiny base's bytes (the recipe modules are read
    under ``source_root``)."""
    return recipe_digest(asdict(shape), recipe_sources(source_root))


def recipe_sources(source_root: Path = PROJECT_ROOT) -> list[Path]:
    """The files :data:`RECIPE_MODULES` names under ``source_root``, in a fixed order."""
    return [path for pattern in RECIPE_MODULES for path in sorted(source_root.glob(pattern))]


def recipe_digest(config: dict, sources: Sequence[Path]) -> str:
    """A short hash of a build's ``config``, the code of its ``sources`` and the versions of the
    libraries that write its bytes. The code enters as its syntax tree without docstrings, and
    comments are not in the tree: neither can change a byte of a build, so correcting one does
    not make every machine build again."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for source in sources:
        digest.update(source.name.encode())
        digest.update(code_fingerprint(source.read_text(encoding="utf-8")).encode())
    for library in RECIPE_LIBRARIES:
        digest.update(f"{library}=={version(library)}".encode())
    return digest.hexdigest()[:16]


def code_fingerprint(source: str) -> str:
    """The syntax tree of Python ``source`` without its docstrings (every statement that is a
    bare string, which Python evaluates and drops), as text."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            statements = getattr(node, field, None)
            if isinstance(statements, list) and statements:
                kept = [s for s in statements if not _is_string(s)]
                setattr(node, field, kept or [ast.Pass()])
    return ast.dump(tree)


def _is_string(statement: ast.stmt) -> bool:
    return (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Constant)
        and isinstance(statement.value.value, str)
    )


def cached_tiny_base(shape=None, progress: bool = True) -> Path:
    """The tiny base of ``shape`` (default :class:`TinyShape`) from the cache, built on first
    use; returns its directory."""
    from shared_model.tiny.build import TinyShape, build_tiny_base

    shape = shape or TinyShape()
    directory = cache_root() / "tiny-base" / recipe_key(shape)
    if _complete(directory):
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    with _locked(directory.with_name(directory.name + ".lock")):
        if _complete(directory):  # another process built it while we waited
            return directory
        partial = directory.with_name(directory.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        build_tiny_base(partial, shape, progress=progress)
        (partial / "recipe.json").write_text(
            json.dumps({"shape": asdict(shape), "key": directory.name}, indent=2) + "\n",
            encoding="utf-8",
        )
        partial.rename(directory)
    return directory


def _complete(directory: Path) -> bool:
    return (directory / "recipe.json").is_file() and (directory / "config.json").is_file()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
