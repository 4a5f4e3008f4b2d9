"""Archive ingestion speed: first pass, cached pass, and plain pydicom on the same DICOM files.

Writes a CT series (one file per slice) and a set of 2D radiographs with pydicom, each in its
own archive with a manifest (one record per radiograph, one for the whole series), then times:

- ``plain``: ``pydicom.dcmread(path).pixel_array`` for every file (the floor any reader pays);
- ``first``: :func:`client.archive.load_site_samples` with an empty cache (hash, decode,
  modality LUT and window, resample, letterbox, cache write);
- ``cached``: the same call again in a fresh reader, served from the pixel cache.

Every file is read once before timing, so all three passes run on a warm page cache, flushed
to disk (no pass shares the machine with the archive's write-back), and dated an hour back, as
an archive export is by the time a site reads it: the cache re-hashes
a file modified less than ``client.archive.cache.RACY_NS`` before it was hashed, so a cached
pass seconds after writing would time that safeguard, not the cache.
Targets: cached at least 20x faster than the first pass; the first pass at most 1.5x plain
pydicom. Prints a table and writes JSON.

The archives and the site's work folder (the pixel cache) go in a temporary folder under
``--scratch`` (default: the system's temporary folder); put it on the disk a site would use,
since creating small files costs ten times more on some temporary filesystems than on others.
The first pass reads with the site default of one thread per core (``--workers`` to change).

    python benchmarks/ingest.py [--slices 500] [--images 500] [--workers N] [--repeats 3]
        [--scratch DIR] [--out benchmarks/results/ingest.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom

from client.archive import load_site_samples
from client.config import SiteConfig, default_decode_workers
from simulations.imaging_writers import write_dicom_image, write_dicom_series

CACHED_TARGET, FIRST_TARGET = 20.0, 1.5
EXPORT_AGE_NS = 3600 * 10**9


def write_ct_archive(archive: Path, slices: int, size: int, rng: np.random.Generator) -> int:
    """A CT series of ``slices`` files and a manifest with one record for it; returns records."""
    hounsfield = rng.normal(40.0, 200.0, (slices, size, size)).astype(np.float32)
    write_dicom_series(archive / "ct", hounsfield, patient_id="BENCH-CT")
    _manifest(archive, [("ct", "CT", "BENCH-CT")])
    return 1


def write_xray_archive(archive: Path, images: int, size: int, rng: np.random.Generator) -> int:
    """``images`` 2D DICOM radiographs, one manifest record each; returns records."""
    entries = []
    for number in range(images):
        relative = f"xr/{number:04d}.dcm"
        stored = rng.integers(0, 4096, (size, size), dtype=np.uint16)
        write_dicom_image(
            archive / relative, stored, patient_id=f"BENCH-{number:04d}", modality="DX"
        )
        entries.append((relative, "DX", f"BENCH-{number:04d}"))
    _manifest(archive, entries)
    return images


def _manifest(archive: Path, entries: list[tuple[str, str, str]]) -> None:
    records = [
        {
            "id": f"record-{number}",
            "patient_id": patient,
            "task": "caption",
            "lang": "en",
            "split": "train",
            "images": [image],
            "modality": modality,
            "text": "benchmark image",
        }
        for number, (image, modality, patient) in enumerate(entries)
    ]
    lines = "".join(json.dumps(r) + "\n" for r in records)
    (archive / "manifest.jsonl").write_text(lines, encoding="utf-8")


def timed(function: Callable[[], object]) -> float:
    """Wall-clock seconds of one call."""
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def measure(name: str, archive: Path, work: Path, records: int, args: argparse.Namespace) -> dict:
    """Plain pydicom, first and cached pass over one archive, each the best of
    ``args.repeats`` (a first pass starts from an empty cache every time)."""
    files = sorted(archive.rglob("*.dcm"))
    written = time.time_ns() - EXPORT_AGE_NS
    for file in files:  # an export written earlier; page cache warm for every pass alike
        os.utime(file, ns=(written, written))
        file.read_bytes()
    os.sync()  # and on disk: no pass competes with the write-back of the archive just written

    def ingest(attempt: int) -> None:
        config = SiteConfig(
            path=archive / "site.toml",
            name=name,
            archive=archive,
            work_dir=work / f"attempt-{attempt}",
            decode_workers=args.workers,
        )
        samples, _ = load_site_samples(config, canvas=args.canvas, slices=args.volume_slices)
        if len(samples) != records:
            raise RuntimeError(f"{name}: {len(samples)} of {records} records usable")

    repeats = range(args.repeats)
    plain = min(timed(lambda: [pydicom.dcmread(f).pixel_array for f in files]) for _ in repeats)
    first = min(timed(lambda attempt=attempt: ingest(attempt)) for attempt in repeats)
    cached = min(timed(lambda: ingest(args.repeats - 1)) for _ in repeats)
    return {
        "part": name,
        "files": len(files),
        "records": records,
        "plain_seconds": plain,
        "first_seconds": first,
        "cached_seconds": cached,
    }


def with_ratios(row: dict) -> dict:
    """Add rates and the two ratios the targets are about."""
    return {
        **row,
        "plain_files_per_second": row["files"] / row["plain_seconds"],
        "first_files_per_second": row["files"] / row["first_seconds"],
        "cached_files_per_second": row["files"] / row["cached_seconds"],
        "first_records_per_second": row["records"] / row["first_seconds"],
        "cached_records_per_second": row["records"] / row["cached_seconds"],
        "cached_speedup": row["first_seconds"] / row["cached_seconds"],
        "first_over_plain": row["first_seconds"] / row["plain_seconds"],
    }


def print_table(rows: list[dict]) -> None:
    """One line per part: seconds, files per second, and the two ratios against their targets."""
    print(
        f"{'part':14} {'files':>6} {'records':>7} {'plain s':>8} {'first s':>8} {'cached s':>9}"
        f" {'first f/s':>9} {'cached f/s':>10} {'cached x':>9} {'first/plain':>11}"
    )
    for row in rows:
        print(
            f"{row['part']:14} {row['files']:6d} {row['records']:7d} {row['plain_seconds']:8.2f}"
            f" {row['first_seconds']:8.2f} {row['cached_seconds']:9.3f}"
            f" {row['first_files_per_second']:9.0f} {row['cached_files_per_second']:10.0f}"
            f" {row['cached_speedup']:9.1f} {row['first_over_plain']:11.2f}"
        )
    print(f"targets: cached x >= {CACHED_TARGET:.0f}, first/plain <= {FIRST_TARGET}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=500, help="CT slices (one file each)")
    parser.add_argument("--images", type=int, default=500, help="2D DICOM radiographs")
    parser.add_argument("--ct-size", type=int, default=512, help="CT matrix (rows = columns)")
    parser.add_argument("--image-size", type=int, default=1024, help="radiograph rows = columns")
    parser.add_argument("--canvas", type=int, default=448, help="model canvas (pixels)")
    parser.add_argument("--volume-slices", type=int, default=8, help="slices per volume")
    parser.add_argument(
        "--workers", type=int, default=default_decode_workers(), help="site decode threads"
    )
    parser.add_argument("--repeats", type=int, default=3, help="best of this many per pass")
    parser.add_argument("--scratch", type=Path, default=None, help="folder for temporary files")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ingest.json"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fedumit-ingest-", dir=args.scratch) as directory:
        root = Path(directory)
        parts = (
            ("ct-series", write_ct_archive, args.slices, args.ct_size),
            ("2d-radiographs", write_xray_archive, args.images, args.image_size),
        )
        for name, write, count, size in parts:
            print(f"writing {name}: {count} files of {size}x{size} ...", flush=True)
            records = write(root / name, count, size, rng)
            row = measure(name, root / name, root / f"work-{name}", records, args)
            rows.append(with_ratios(row))
    total = {
        key: sum(row[key] for row in rows)
        for key in ("files", "records", "plain_seconds", "first_seconds", "cached_seconds")
    }
    rows.append(with_ratios({"part": "total", **total}))
    print_table(rows)
    print(f"decode threads: {args.workers}; scratch: {args.scratch or tempfile.gettempdir()}")
    settings = vars(args) | {"out": str(args.out), "scratch": str(args.scratch)}
    result = {"settings": settings, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
