"""Many-shot tabular prediction (MachineLearningLM, arXiv 2509.06806), to come: serializer,
prompt planner, parser, scikit-learn estimator and batch jobs. No HTTP here.
"""
