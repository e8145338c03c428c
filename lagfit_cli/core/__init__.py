"""The core: pure math on tensors. No hydra, omegaconf or matplotlib, no files written, no
printing. Importing it fills the registries, in dependency order: systems (built-ins, then
``custom`` from expressions), solvers, datasets (``grid``/``uniform``, then ``csv``)."""

from lagfit_cli.core import registry  # noqa: F401
from lagfit_cli.core import systems, expressions  # noqa: F401
from lagfit_cli.core import solvers  # noqa: F401
from lagfit_cli.core import data, datafile  # noqa: F401
from lagfit_cli.core import trajectory_file, derivatives  # noqa: F401  data=trajectory
