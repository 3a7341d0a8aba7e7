"""Supernet training criteria (imported by `fairseq_nas.register()`)."""
from fairseq_nas.criterions import supernet_distillation  # noqa: F401
