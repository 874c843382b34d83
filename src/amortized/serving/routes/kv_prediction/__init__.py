"""``/v1/amortized/kv-prediction`` and the request policy in front of the OpenAI routes."""
