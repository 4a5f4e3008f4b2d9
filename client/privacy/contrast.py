"""What an answer owes to the image: each training record contrasted with a public image.

Under DP-SGD every patient's gradient is clipped to the same norm ``C``, and at a base that
answers from the words most of that norm teaches the answer whatever the image: the same answer
over another patient's image pulls almost the same way (``benchmarks/image_signal.py``: a
cosine of 0.98 or more), so about a tenth of a clipped gradient is the image's, and the noise,
which does not shrink with it, buries it. A record's loss here is its own minus ``lambda``
times the loss of the same prompt and answer over the images of a public record of the same
image shapes, both in the record's unit, so the unit's gradient is clipped after the part they
share has cancelled: at ``lambda = 1`` the whole clipped norm is spent on what tells the
record's image from another. A public image of another class pulls the answer down where it
does not belong; one of the same class adds nearly nothing.

The control images are public (a dataset of the site's kind anyone may see, never the site's
own records, named in the site config's ``[contrast]`` section): a unit's clipped gradient still
depends on one patient's records only, so the privacy guarantee is the same. Each record keeps
its control for the whole run (the public records taken in turn per image shape, in record
order), and controls cost a second forward and backward pass per sampled record.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import replace

from shared_model.sample import Sample

CONTROL_PREFIX = "control-"


def image_shapes(record: Sample) -> tuple[tuple[int, ...], ...]:
    """The shapes of a record's images, in order (what a control must match)."""
    return tuple(image.shape for image in record.images)


def public_controls(public: Sequence[Sample], records: Sequence[Sample]) -> list[Sample | None]:
    """For each of ``records``, its prompt and answer over the images of a public record of the
    same image shapes, or ``None`` where ``public`` has none of that shape."""
    by_shape: dict[tuple, list[Sample]] = defaultdict(list)
    for record in public:
        by_shape[image_shapes(record)].append(record)
    used: Counter[tuple] = Counter()
    controls: list[Sample | None] = []
    for record in records:
        shape = image_shapes(record)
        pool = by_shape.get(shape)
        if not pool:
            controls.append(None)
            continue
        controls.append(_over(record, pool[used[shape] % len(pool)]))
        used[shape] += 1
    return controls


def public_pairs(public: Sequence[Sample]) -> list[Sample | None]:
    """Each public record's prompt and answer over the images of the next public record of the
    same image shapes (in order, the last taking the first), or ``None`` where it is the only
    one of its shapes: the controls of the contrast gradients a gradient subspace is found on,
    so that its directions are those of what a contrasted record's clipped gradient carries."""
    by_shape: dict[tuple, list[int]] = defaultdict(list)
    for index, record in enumerate(public):
        by_shape[image_shapes(record)].append(index)
    controls: list[Sample | None] = [None] * len(public)
    for members in by_shape.values():
        if len(members) < 2:
            continue
        for position, index in enumerate(members):
            partner = public[members[(position + 1) % len(members)]]
            controls[index] = _over(public[index], partner)
    return controls


def _over(record: Sample, image_record: Sample) -> Sample:
    """``record``'s prompt and answer over ``image_record``'s images, as a control."""
    return replace(
        record,
        record_id=f"{CONTROL_PREFIX}{record.record_id}",
        images=image_record.images,
        geometries=image_record.geometries,
    )
