"""The weight average: its ramped decay, floating buffers averaged, integer buffers copied."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from domadapt.training.weight_average import WeightAverage


def test_the_average_follows_the_ramped_decay_then_the_set_one():
    net = nn.BatchNorm2d(1)
    with torch.no_grad():
        net.weight.fill_(0.0)
    average = WeightAverage(net, decay=0.5)
    expected = 0.0
    for n, live in enumerate([1.0, 2.0, 4.0, 8.0] + [8.0] * 20):
        with torch.no_grad():
            net.weight.fill_(live)
            net.running_mean.fill_(live)
            net.num_batches_tracked.fill_(n + 1)
        d = min(0.5, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * live
        average.update(net)
        assert float(average.module.weight) == pytest.approx(expected)
        assert float(average.module.running_mean) == pytest.approx(expected)
        assert int(average.module.num_batches_tracked) == n + 1
    assert average.current_decay() == 0.5
    assert not average.module.weight.requires_grad


def test_the_average_round_trips_through_its_state():
    net = nn.Linear(2, 1)
    first = WeightAverage(net, 0.9)
    for _ in range(3):
        with torch.no_grad():
            net.weight.add_(1.0)
        first.update(net)
    second = WeightAverage(nn.Linear(2, 1), 0.9)
    second.load_state_dict(first.state_dict())
    assert second.updates == 3
    assert torch.equal(second.module.weight, first.module.weight)


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.1])
def test_a_decay_outside_the_open_unit_interval_is_refused(decay):
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(nn.Linear(1, 1), decay)
