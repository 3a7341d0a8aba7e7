"""Silence the deprecation warnings that fairseq's use of hydra 1.3 prints at every start
(about 25 lines on stderr that bury the lines that matter). Only warnings raised from
hydra's own modules, hydra's notices reported from `sys` (version_base, schema matching)
and fairseq's use of the deprecated `torch.cuda.amp.autocast` are filtered;
`FAIRSEQ_NAS_WARNINGS=1` keeps them."""
from __future__ import annotations

import os
import warnings


def quiet_hydra_warnings() -> None:
    if os.environ.get("FAIRSEQ_NAS_WARNINGS"):
        return
    warnings.filterwarnings("ignore", module=r"hydra(\.|$)")
    warnings.filterwarnings("ignore", message=r"(?s)\s*The version_base parameter is not specified")
    warnings.filterwarnings("ignore", message=r"(?s)\s*'config' is validated against ConfigStore schema")
    # fairseq's own call of a deprecated torch API (torch.cuda.amp.autocast), once per run
    warnings.filterwarnings("ignore", category=FutureWarning, message=r"`torch\.cuda\.amp\.autocast")
    # "Please install tensorboardX", logged at INFO when fairseq imports a speech task (in every
    # tool that imports fairseq through this package; effective only before that import)
    import logging

    logging.getLogger("fairseq.tasks.text_to_speech").setLevel(logging.WARNING)
