"""rotation: images whose pixels are turned 90/180/270 degrees.

EXIF orientation is applied at decode (the working copy is upright as the camera meant) and
recorded in `rotation__exif`. The pixels themselves are checked by a detector
(`flywheel.models.rotation`):
- text-bearing images (`rotation__method` = `text`): the `docorient` wheel's orientation
  detector, for images whose dark pixels are banded into lines above `text_banding`. Off by
  default: that test also fires on horizons (see `flywheel.models.rotation`), so set it for
  corpora of scans and screenshots;
- everything else (`photo`): a self-supervised classifier (one hidden layer) over frozen OpenNSFW ResNet-50
  features (model store `rotation-photo`, trained by `flywheel models train rotation`),
  looking at the image and its mirror image turned four ways each and voting.

`rotation__angle` is the detected clockwise turn of the stored pixels (0/90/180/270) and
`rotation__confidence` the detector's probability of it; `rotation__turned_confidence` is that
probability when the angle is non-zero (null when upright), the one measure the rule compares: a
confidence >= `min_confidence` fails `rotation:rotated`. Any answer below `min_confidence` sets
`rotation__uncertain` (the `rotation:uncertain` flag): recorded for review, never a rejection.
"""

from __future__ import annotations

from typing import Any, Sequence

import pyarrow as pa
from pydantic import Field

from flywheel.filters.base import Operator, Params, Resources, Rule, Work, register


class RotationParams(Params):
    min_confidence: float = Field(0.95, ge=0, le=1, description="below: `uncertain`, recorded, not rejected. "
                                  "0.95: 0.9% of upright and 76% of turned photos rejected in leave-sources-out "
                                  "tests of rotation-photo-v6 on 972 photos (0.9: 1.7% and 80%); see "
                                  "models/weights/rotation_photo.md")
    photo_model: str = Field("rotation-photo", description="model-store name of the photo rotation head")
    text_banding: float | None = Field(None, ge=1, description="projection banding above which an image goes to "
                                       "docorient (text); None: every image to the photo head. ~8 suits scans")
    tta: bool = Field(True, description="vote over the image and its mirror, each turned four ways (8x the compute, "
                      "fewer errors)")


@register
class Rotation(Operator):
    name = "rotation"
    Params = RotationParams
    reads = ("exif_orientation",)
    writes = ("rotation__exif", "rotation__angle", "rotation__confidence", "rotation__uncertain", "rotation__method",
              "rotation__turned_confidence")
    types = {"rotation__exif": pa.int8(), "rotation__angle": pa.int16(), "rotation__uncertain": pa.bool_(),
             "rotation__method": pa.string()}
    rules = (Rule("rotated", "rotation__turned_confidence", ">=", "min_confidence", context=("rotation__angle",),
                  detail="rotation__angle={rotation__angle} with rotation__confidence={value} >= min_confidence={threshold}"),)
    flags = ("uncertain",)  # recorded in `rotation__uncertain`, never a rule
    resources = Resources(num_cpus=1, batch_size=32)
    cards = {
        "rotation__exif": "EXIF orientation tag (1 = upright; 2-8 were applied at decode)",
        "rotation__angle": "detected clockwise pixel rotation 0/90/180/270 (photo head rotation-photo-v6 or docorient-0.4.1)",
        "rotation__confidence": "detector probability of that angle (0-1); higher is surer",
        "rotation__uncertain": "true when rotation__confidence < min_confidence (flag `rotation:uncertain`, not a rejection)",
        "rotation__method": "which detector answered: photo | text",
        "rotation__turned_confidence": "rotation__confidence of a non-zero angle (0-1), null when upright; higher is surer it is turned",
    }

    def required_models(self) -> tuple[str, ...]:
        return ("opennsfw", "docorient", self.params.photo_model)

    def setup(self) -> None:
        from flywheel.models import store
        from flywheel.models.rotation import HEAD_FILE, PhotoRotation

        head_dir = store.path(self.params.photo_model)
        files = list(store.get(self.params.photo_model).files)
        self.photo = PhotoRotation(store.path("opennsfw"), head_dir / (HEAD_FILE if HEAD_FILE in files else files[0]), tta=self.params.tta)
        store.path("docorient")  # verified; docorient loads its own copy from the wheel

    def score(self, batch: pa.Table, work: Sequence[Work | None]) -> dict[str, Sequence[Any]]:
        from flywheel.models.rotation import text_banding, text_orientation

        if not hasattr(self, "photo"):
            self.setup()
        n = len(work)
        exif = batch.column("exif_orientation").to_pylist() if "exif_orientation" in batch.column_names else [None] * n
        angle: list[int | None] = [None] * n
        conf: list[float | None] = [None] * n
        method: list[str | None] = [None] * n
        photos = []
        for i, w in enumerate(work):
            if w is None or min(w.rgb.shape[:2]) < 16:
                continue
            if self.params.text_banding is not None and text_banding(w.rgb) >= self.params.text_banding:
                angle[i], conf[i] = text_orientation(w.rgb)
                method[i] = "text"
            else:
                photos.append(i)
        for i, (a, c) in zip(photos, self.photo.predict([work[i].rgb for i in photos])):
            angle[i], conf[i], method[i] = a, c, "photo"
        return {
            "rotation__exif": [None if w is None else (e or 1) for w, e in zip(work, exif)],
            "rotation__angle": angle,
            "rotation__confidence": conf,
            "rotation__uncertain": [None if c is None else bool(c < self.params.min_confidence) for c in conf],
            "rotation__method": method,
            "rotation__turned_confidence": [c if a else None for a, c in zip(angle, conf)],
        }
