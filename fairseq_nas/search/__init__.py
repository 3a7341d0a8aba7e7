"""Search under latency/parameter limits. No fairseq import: works on spaces, feature
matrices and callables (a ranker's predict, a latency model's predict, a params counter)."""
from fairseq_nas.search.candidates import Candidate, CandidateScorer, Constraints, predict_subnets
from fairseq_nas.search.evolution import (
    EvolutionConfig,
    SearchResult,
    evolution_search,
    initial_population,
    random_search,
    top_k,
)
from fairseq_nas.search.finalists import meets_limit, paired_ratio, round_ratio, select_finalists, winner_index
from fairseq_nas.search.pareto import pareto_front, plot_pareto
from fairseq_nas.search.verify import measure_until_one_meets

__all__ = ["Candidate", "CandidateScorer", "Constraints", "EvolutionConfig", "SearchResult", "evolution_search",
           "measure_until_one_meets", "meets_limit", "paired_ratio", "predict_subnets", "round_ratio",
           "select_finalists", "winner_index", "initial_population", "pareto_front", "plot_pareto", "random_search",
           "top_k"]
