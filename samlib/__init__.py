"""samlib: the code behind the book "Segment Anything for remote sensing".

The public API is what this module exports; the rest is one module per concept (a flat core:
``prompts``, ``metrics``, ``embeddings``, ``decoders`` ...) plus three subpackages: ``teaching`` (the
book's small SAM), ``experts`` (stand-in models that propose prompts) and ``methods`` (one module per
paper). Subpackages and figure helpers are imported on first use, which keeps ``import samlib`` light.

Import order matters: :func:`samlib._compat.ensure_torchvision_ops` must run before anything imports
torchvision or segment_anything (see that module). ``samlib.plots`` is imported on first use, so
``import samlib`` does not load matplotlib.
"""

from samlib import _compat

_compat.ensure_torchvision_ops()

from samlib import data, errors, losses, metrics, models, predict, prompts, results, utils  # noqa: E402
from samlib.data import data_root  # noqa: E402
from samlib.embeddings import EmbeddedImages, embed_images  # noqa: E402
from samlib.errors import (  # noqa: E402
    CheckpointUnavailableError,
    DataNotFoundError,
    InvalidInputError,
    SamlibError,
)
from samlib.models import load_sam  # noqa: E402
from samlib.predict import PromptPredictor  # noqa: E402
from samlib.results import read_results, write_results  # noqa: E402
from samlib.utils import default_device, seed_everything  # noqa: E402

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


def __getattr__(name: str) -> object:
    # Lazy: matplotlib costs ~1 s to import and is only needed for figures.
    if name == "plots":
        import importlib

        return importlib.import_module("samlib.plots")
    raise AttributeError(f"module 'samlib' has no attribute {name!r}")
