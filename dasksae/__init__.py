"""dasksae: locally-connected sparse-autoencoder networks, model-parallel on Dask.

A re-creation of Coates et al., "Deep learning with COTS HPC systems" (ICML
2013): the 9-layer network of Le et al. 2012, spread spatially over GPUs.

The names below are imported when first used, so that ``dasksae`` (the CLI)
starts without importing the network code, and can refuse a bad environment
switch (:mod:`dasksae.switches`) with one line instead of a traceback.
"""

import importlib

from .errors import ConfigError, DasksaeError

__version__ = "0.1.0"

_WHERE = {
    "NAMED_CONFIGS": ".network",
    "NetworkConfig": ".network",
    "StageConfig": ".network",
    "load_config": ".network",
    "named_config": ".network",
    "TiledNetwork": ".tiled_network",
    "TileGrid": ".tiling",
}

__all__ = ["ConfigError", "DasksaeError", *_WHERE]


def __getattr__(name):
    if name not in _WHERE:
        raise AttributeError(f"module 'dasksae' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name], __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_WHERE))
