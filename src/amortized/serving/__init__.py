"""Everything that runs inside or in front of vLLM: the endpoint plugin, capability routes
and the ``amortized serve`` launcher.

Capability packages (``tabular``, ``planners``, ...) never import this package; their
routes here import them.
"""

from amortized.serving.capabilities import Capability, enabled_capabilities

__all__ = ["Capability", "enabled_capabilities"]
