"""shrinknet: shrink trained feed-forward networks neuron by neuron to fit a memory budget.

Implements Wolfe et al., "The Incredible Shrinking Neural Network" (arXiv 1701.04465).
"""

from .score.analysis import compare_estimates, correlated_pairs, estimates_along_run, gain_curves
from .model.backprop2 import Derivatives, backprop2
from .errors import InputError
from .ship.export import export
from .ship.c_integer import export_integer_c
from .ship.tflite import export_tflite
from .store.integer import IntegerNet, integer_bytes, quantize_network
from .store.memory import format_bytes, network_bytes, parse_size
from .ship.modelio import load_model, save_model
from .model.mlp import Net
from .model.network import Network
from .model.parse import as_net
from .model.residual import Residual
from .choose.config import PruneConfig
from .choose.prune import ALGORITHMS, prune
from .choose.result import PruneResult, Step
from .choose.sanity import KeptCheckWarning, StartCheckError, StartCheckWarning
from .score.saliency import METHODS, saliency
from .choose.speed import SPEEDS
from .model.surgery import shrink

from .version import __version__

__all__ = [
    "ALGORITHMS",
    "Derivatives",
    "InputError",
    "IntegerNet",
    "KeptCheckWarning",
    "METHODS",
    "SPEEDS",
    "StartCheckError",
    "StartCheckWarning",
    "Net",
    "Network",
    "PruneConfig",
    "PruneResult",
    "Residual",
    "Step",
    "__version__",
    "as_net",
    "backprop2",
    "compare_estimates",
    "correlated_pairs",
    "estimates_along_run",
    "export",
    "export_integer_c",
    "export_tflite",
    "format_bytes",
    "gain_curves",
    "integer_bytes",
    "load_model",
    "network_bytes",
    "parse_size",
    "prune",
    "quantize_network",
    "saliency",
    "save_model",
    "shrink",
]
