"""Source only: train on labeled source patches, apply to the target unchanged.

The reference every adaptation method must beat; its checkpoint is still chosen
label-free (by ``selection.criterion``), like every other method's.
"""

from __future__ import annotations

from domadapt.strategies.base import (
    Domains,
    FitResult,
    Strategy,
    StrategyContext,
    new_segmentation_net,
    segmentation_stage,
    select,
    source_sampler,
)


class Baseline(Strategy):
    name = "baseline"

    def fit(self, domains: Domains, ctx: StrategyContext) -> FitResult:
        cfg = ctx.config
        net = new_segmentation_net(cfg)
        stage = segmentation_stage("segmentation", net, cfg, domains, source_sampler(cfg, domains))
        result = ctx.trainer.fit(stage)
        return select(result, net, cfg.selection.criterion)
