"""``POST /v1/amortized/tabular/predict``: many-shot prediction on the server's own engine."""
