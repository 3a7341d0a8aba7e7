"""Latency and cost of subnets: analytic params/FLOPs (`costs`, pure Python), the measurement
protocol (`measure`, torch) with its parts (`timing`: one model's runs and decoder loops;
`generator`: fairseq's SequenceGenerator; `rounds`: interleaved scheduling; `host`: pinning,
malloc and the load check), timing statistics (`stats`), resumable result files (`store`)
and data-bin vocabulary sizes (`vocab`). Importing this package does not import torch."""
from fairseq_nas.latency.costs import count_flops, count_params, flops_breakdown
from fairseq_nas.latency.stats import noise_report, summarize, trimmed_mean

__all__ = ["count_flops", "count_params", "flops_breakdown", "noise_report", "summarize", "trimmed_mean"]
