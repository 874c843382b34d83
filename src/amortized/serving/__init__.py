"""Everything that runs inside or in front of vLLM: the endpoint plugin, capability routes
and the ``amortized serve`` launcher.

Capability packages (``tabular``, ``planners``, ...) never import this package; their
routes here import them.
"""

from typing import TYPE_CHECKING

from amortized._lazy import lazy_exports

if TYPE_CHECKING:
    from amortized.serving.capabilities import Capability, enabled_capabilities

_EXPORTS = {
    "Capability": "amortized.serving.capabilities",
    "enabled_capabilities": "amortized.serving.capabilities",
}

__all__ = ["Capability", "enabled_capabilities"]

__getattr__ = lazy_exports(__name__, _EXPORTS)
