"""Search spaces and subnets. Pure Python (+numpy): never imports torch or fairseq."""
from fairseq_nas.errors import SpaceError
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
           "ATTENTION_OPERATORS", "CONV_OPERATORS"]
