"""dasksae: locally-connected sparse-autoencoder networks, model-parallel on Dask.

A re-creation of Coates et al., "Deep learning with COTS HPC systems" (ICML
2013): the 9-layer network of Le et al. 2012, spread spatially over GPUs.
"""

from .errors import ConfigError, DasksaeError
from .network import NAMED_CONFIGS, NetworkConfig, StageConfig, load_config, named_config
from .tiled_network import TiledNetwork
from .tiling import TileGrid

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DasksaeError",
    "NAMED_CONFIGS",
    "NetworkConfig",
    "StageConfig",
    "TileGrid",
    "TiledNetwork",
    "load_config",
    "named_config",
]
