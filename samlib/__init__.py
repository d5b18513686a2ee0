"""samlib: the code behind the book "Segment Anything for remote sensing".

The public API is what this module exports; the rest is one module per concept (a flat core:
``prompts``, ``metrics``, ``embeddings``, ``decoders`` ...) plus three subpackages: ``teaching`` (the
book's small SAM), ``experts`` (stand-in models that propose prompts) and ``methods`` (one module per
paper). Everything that imports ``segment_anything`` (and so torchvision) or matplotlib is imported on
first use (``samlib.load_sam``, ``samlib.PromptPredictor``, ``samlib.plots`` ...), which keeps
``import samlib`` light.

Import order matters: :func:`samlib._compat.ensure_torchvision_ops` must run before anything imports
torchvision or segment_anything (see that module).
"""

from samlib import _compat

_compat.ensure_torchvision_ops()

from typing import TYPE_CHECKING  # noqa: E402

from samlib import data, errors, metrics, prompts, results, utils  # noqa: E402
from samlib.data import data_root  # noqa: E402
from samlib.errors import (  # noqa: E402
    CheckpointUnavailableError,
    DataNotFoundError,
    InvalidInputError,
    SamlibError,
)
from samlib.results import read_results, write_results  # noqa: E402
from samlib.utils import default_device, seed_everything  # noqa: E402

if TYPE_CHECKING:
    from samlib import losses, models, plots, predict
    from samlib.embeddings import EmbeddedImages, embed_images
    from samlib.models import load_sam
    from samlib.predict import PromptPredictor

__version__ = "0.1.0"

__all__ = [
    "CheckpointUnavailableError",
    "DataNotFoundError",
    "EmbeddedImages",
    "InvalidInputError",
    "PromptPredictor",
    "SamlibError",
    "__version__",
    "data",
    "data_root",
    "default_device",
    "embed_images",
    "errors",
    "load_sam",
    "losses",
    "metrics",
    "models",
    "plots",
    "predict",
    "prompts",
    "read_results",
    "results",
    "seed_everything",
    "utils",
    "write_results",
]


# Names whose modules import segment_anything -> torchvision (which imports torch._dynamo: seconds) or
# matplotlib: imported on first use, so ``import samlib`` costs little more than ``import torch``.
_LAZY: dict[str, tuple[str, str | None]] = {
    "load_sam": ("samlib.models", "load_sam"),
    "PromptPredictor": ("samlib.predict", "PromptPredictor"),
    "EmbeddedImages": ("samlib.embeddings", "EmbeddedImages"),
    "embed_images": ("samlib.embeddings", "embed_images"),
}


def __getattr__(name: str) -> object:
    import importlib

    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr) if attr else importlib.import_module(module)
    try:  # any submodule or subpackage: samlib.plots, samlib.methods, ...
        return importlib.import_module(f"samlib.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"samlib.{name}":
            raise
    raise AttributeError(f"module 'samlib' has no attribute {name!r}")
