"""Which parameter pair the paths figure draws, and what the others do on the grid."""

import pytest
import torch

from lagfit_cli.errors import LagfitError
from lagfit_cli.core.landscape import followers, landscape_pair, parameter_grid
from lagfit_cli.core.systems import ANHARMONIC, DOUBLE_PENDULUM, PENDULUM


def test_default_pair_lies_in_one_scale_group():
    assert landscape_pair(ANHARMONIC, None, None) == (0, 1)  # m, k
    assert landscape_pair(PENDULUM, None, "l") == (1, 2)  # l, g (m is not identifiable)
    assert landscape_pair(DOUBLE_PENDULUM, None, None) == (0, 1)  # m1, m2
    assert landscape_pair(DOUBLE_PENDULUM, ["l1", "g"], None) == (2, 4)
    with pytest.raises(LagfitError, match="landscape_params"):
        landscape_pair(PENDULUM, ["m", "x"], None)


def test_only_the_drawn_pairs_own_group_follows():
    assert followers(ANHARMONIC, 0, 1) == [2]  # alpha follows m
    assert followers(DOUBLE_PENDULUM, 2, 3) == [4]  # g follows l1
    assert followers(DOUBLE_PENDULUM, 0, 2) == []  # m1, l1: different groups
    reference = torch.tensor([2.0, 1.0, 1.5, 1.0, 9.0])
    grid = parameter_grid(reference, 2, 3, [4], torch.tensor([3.0]), torch.tensor([5.0]))
    # l1 doubled -> g doubles; the masses stay
    assert torch.equal(grid[0], torch.tensor([2.0, 1.0, 3.0, 5.0, 18.0]))
