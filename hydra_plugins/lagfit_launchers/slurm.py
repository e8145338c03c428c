"""``hydra/launcher=submitit_slurm``: the submitit SLURM launcher with lagfit's wait, records and
one-line failures; the code is lagfit_cli/app/slurm_launcher.py. Without the slurm extra
(hydra-submitit-launcher) the class is absent, and lagfit says which extra to install."""

try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
except ImportError:  # the slurm extra is not installed
    pass
else:
    from lagfit_cli.app.slurm_launcher import SlurmLauncherMixin

    class LagfitSlurmLauncher(SlurmLauncherMixin, SlurmLauncher):
        pass
