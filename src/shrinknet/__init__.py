"""shrinknet: shrink trained feed-forward networks neuron by neuron to fit a memory budget.

Implements Wolfe et al., "The Incredible Shrinking Neural Network" (arXiv 1701.04465).
"""

from .analysis import compare_estimates, correlated_pairs, estimates_along_run, gain_curves
from .backprop2 import Derivatives, backprop2
from .errors import InputError
from .export import export
from .memory import format_bytes, network_bytes, parse_size
from .modelio import load_model, save_model
from .network import Net, Network, as_net
from .prune import ALGORITHMS, PruneResult, Step, prune
from .saliency import METHODS, saliency
from .speed import SPEEDS
from .surgery import shrink

__version__ = "0.3.0"

__all__ = [
    "ALGORITHMS",
    "Derivatives",
    "InputError",
    "METHODS",
    "SPEEDS",
    "Net",
    "Network",
    "PruneResult",
    "Step",
    "__version__",
    "as_net",
    "backprop2",
    "compare_estimates",
    "correlated_pairs",
    "estimates_along_run",
    "export",
    "format_bytes",
    "gain_curves",
    "load_model",
    "network_bytes",
    "parse_size",
    "prune",
    "saliency",
    "save_model",
    "shrink",
]
