"""fairseq-nas: architecture search for fairseq translation models.

fairseq imports only tasks/ and models/ of a --user-dir on its first import of the
package; `register()` imports every registering module, so the architectures, task and
criteria exist however the package was first imported. It runs automatically when
fairseq is already loaded (fairseq-train --user-dir, the hub interface); the pure-Python
parts (space, ranking, search, the `fairseq-nas` CLI) do not load torch or fairseq.
"""
import sys

__version__ = "0.1.0"


def register() -> None:
    """Register the plugin's fairseq models, task and criteria (idempotent)."""
    from fairseq_nas.quiet import quiet_hydra_warnings

    quiet_hydra_warnings()  # before fairseq's modules are imported below
    from fairseq_nas import (
        criterions,  # noqa: F401
        safe_globals,  # noqa: F401  (torch.load safe globals)
    )
    from fairseq_nas.errors import install_excepthook
    from fairseq_nas.models import subnet, supernet  # noqa: F401
    from fairseq_nas.tasks import supernet_translation  # noqa: F401

    install_excepthook()  # one-line errors in fairseq-train, fairseq-generate, ...


if "fairseq" in sys.modules:
    register()
