"""Subnet samplers for supernet training. No fairseq or torch import here: usable on their own.

The torch parts of DSS (the validator `sampling.validator`, `sampling.divergence`) are
imported where they are used.
"""
from fairseq_nas.sampling.dss import (
    DSSOptions,
    DSSSampler,
    SampleSpace,
    ScoreShard,
    distinct_draws,
    dss_step,
    space_digest,
    write_dss_outputs,
)
from fairseq_nas.sampling.evolution import ExplorationResult, evolutionary_exploration
from fairseq_nas.sampling.uniform import FixedSampler, UniformSampler, representative_subnets

__all__ = ["FixedSampler", "UniformSampler", "representative_subnets", "DSSOptions", "DSSSampler", "SampleSpace",
           "ScoreShard", "distinct_draws", "dss_step", "space_digest", "write_dss_outputs", "ExplorationResult",
           "evolutionary_exploration"]
