"""``GET /v1/amortized/info``: what this server offers."""
