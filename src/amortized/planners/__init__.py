"""Code-policy grid planners (IPP, arXiv 2505.10749), to come: MiniGrid and GRASP
environments, a sandbox for generated policies, the refinement loop and a program library.
No HTTP here.
"""
