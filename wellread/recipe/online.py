"""Whether the Hugging Face hub answers: what ``make run`` asks before it takes the data from there
(``wellread recipe --source hub``). Light on purpose (no PyTorch): the Makefile calls it before anything."""

from __future__ import annotations

import urllib.error
import urllib.request

from wellread import hub

GLUE_HUB_ID = "nyu-mll/glue"


def hub_reachable(timeout: float = 10.0) -> bool:
    """Whether the Hugging Face hub (``HF_ENDPOINT``) answers, so that ``--source hub`` can fetch the data;
    False when offline (``WELLREAD_OFFLINE`` / ``HF_HUB_OFFLINE``) or when nothing answers."""
    if hub.is_offline():
        return False
    request = urllib.request.Request(hub.hub_url(f"datasets/{GLUE_HUB_ID}", "README.md"), method="HEAD",
                                     headers={"User-Agent": "wellread"})
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True  # an answer (even "not found"): the hub is there
    except (OSError, ValueError):
        return False
