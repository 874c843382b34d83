"""URL paths shared by the server's routes and their clients (no imports: nothing cycles)."""

ROUTE_PREFIX = "/v1/amortized"
"""Every amortized route lives below this path."""
