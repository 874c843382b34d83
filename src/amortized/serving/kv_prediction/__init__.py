"""vLLM's side of KV-prediction prefill: the KV connector, the only module of the capability
that imports vLLM. The capability itself (config, maps, training, runtime) is
:mod:`amortized.kv_prediction`; deployments name this package's ``connector`` in vLLM's
``--kv-transfer-config``.
"""
