"""The embedded teaching SAM: Meta's architecture at small size, pretrained here.

* :mod:`samlib.teaching.model` — config, builder, loader, weight transfer (what ``load_sam`` imports);
* :mod:`samlib.teaching.train` — pretraining on generated scenes, export of the shipped checkpoint;
* :mod:`samlib.teaching.evaluate` — the model card's evaluation report;
* ``python -m samlib.teaching train|eval|export`` — the command line (:mod:`samlib.teaching.__main__`).

Only the model part is imported here, so loading the model does not import the trainer.
"""

from samlib.teaching.model import (
    TEACHING_CHECKPOINT,
    TeachingConfig,
    build_teaching_sam,
    load_teaching_sam,
    transfer_weights,
)

__all__ = [
    "TEACHING_CHECKPOINT",
    "TeachingConfig",
    "build_teaching_sam",
    "load_teaching_sam",
    "transfer_weights",
]
