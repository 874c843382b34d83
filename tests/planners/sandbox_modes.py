"""The two sandbox modes every sandbox test runs in (bubblewrap skipped where unusable)."""

import pytest

from amortized.planners.sandbox import bubblewrap_available

MODES = [
    pytest.param(False, id="weak"),
    pytest.param(
        True,
        id="bwrap",
        marks=pytest.mark.skipif(not bubblewrap_available(), reason="bubblewrap not usable"),
    ),
]
