"""Subnet samplers for supernet training. No fairseq import: usable on their own."""
from fairseq_nas.sampling.uniform import FixedSampler, UniformSampler, representative_subnets

__all__ = ["FixedSampler", "UniformSampler", "representative_subnets"]
