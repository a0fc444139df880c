"""The machine a benchmark ran on, recorded in every results JSON (one definition for all)."""

from __future__ import annotations

import os
import platform


def machine_info(**extra) -> dict:
    """Processor, node, cores, Python/torch versions, torch device and the current load.

    The 1-minute load average is recorded because other processes may compete for the cores;
    ``extra`` adds or overrides fields (library versions, a forced device).
    """
    import torch

    cuda = torch.cuda.is_available()
    info = {
        "processor": platform.processor() or platform.machine(),
        "node": platform.node(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    info.update(extra)
    return info
