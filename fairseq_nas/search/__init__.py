"""Search under latency/parameter limits. No fairseq import: works on spaces, feature
matrices and callables (a ranker's predict, a latency model's predict, a params counter)."""
from fairseq_nas.search.evolution import (
    EvolutionConfig,
    SearchResult,
    evolution_search,
    initial_population,
    random_search,
    top_k,
)
from fairseq_nas.search.pareto import plot_pareto, soft_pareto_front
from fairseq_nas.search.scoring import Candidate, CandidateScorer, Constraints, predict_subnets
from fairseq_nas.search.verify import measure_until_one_meets

__all__ = ["Candidate", "CandidateScorer", "Constraints", "EvolutionConfig", "SearchResult", "evolution_search",
           "measure_until_one_meets", "predict_subnets",
           "initial_population", "plot_pareto", "random_search", "soft_pareto_front", "top_k"]
