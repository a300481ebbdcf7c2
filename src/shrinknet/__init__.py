"""shrinknet: shrink trained feed-forward networks neuron by neuron to fit a memory budget.

Implements Wolfe et al., "The Incredible Shrinking Neural Network" (arXiv 1701.04465).
"""

from .backprop2 import Derivatives, backprop2
from .network import Net, as_net
from .saliency import METHODS, saliency

__version__ = "0.1.0"

__all__ = ["Derivatives", "METHODS", "Net", "as_net", "backprop2", "saliency", "__version__"]
