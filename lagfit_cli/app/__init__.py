"""The command line: ``lagfit run`` (Hydra app, config schema and validation, tasks, sweeps).

Nothing here is imported by ``lagfit_cli`` itself: the library works without Hydra.
"""
