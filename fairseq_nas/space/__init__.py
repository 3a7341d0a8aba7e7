"""Search spaces and subnets. Pure Python (+numpy, PyYAML): never imports torch or fairseq."""
from fairseq_nas.errors import SpaceError
from fairseq_nas.space.encode import encode, encode_many, feature_groups, feature_names
from fairseq_nas.space.loader import list_builtin_spaces, load_space, parse_space
from fairseq_nas.space.schema import StackSpace
from fairseq_nas.space.searchspace import SearchSpace
from fairseq_nas.space.subnet import (
    ACTIVATIONS,
    ATTENTION_OPERATORS,
    CONV_OPERATORS,
    NORMS,
    OPERATORS,
    LayerConfig,
    StackConfig,
    Subnet,
)

__all__ = ["SpaceError", "Subnet", "LayerConfig", "StackConfig", "OPERATORS", "ACTIVATIONS", "NORMS",
           "ATTENTION_OPERATORS", "CONV_OPERATORS", "SearchSpace", "StackSpace", "load_space", "parse_space",
           "list_builtin_spaces", "encode", "encode_many", "feature_names", "feature_groups"]
