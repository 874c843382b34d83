"""Baked-in activation steering (CASAL, arXiv 2510.02324), to come: activation capture,
known/unknown labelling, steering vectors, one-layer training and export. No HTTP here.
"""
