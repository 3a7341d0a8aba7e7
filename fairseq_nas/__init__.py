"""fairseq-nas: architecture search for fairseq translation models.

fairseq imports only tasks/ and models/ of a --user-dir on first import; importing them
here registers everything however the package was first imported.
"""
from fairseq_nas import safe_globals  # noqa: F401  (registers torch.load safe globals)
from fairseq_nas.models import subnet, supernet  # noqa: F401
from fairseq_nas.tasks import supernet_translation  # noqa: F401

__version__ = "0.1.0"
