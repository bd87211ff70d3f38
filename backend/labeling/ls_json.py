"""Label Studio's JSON as this package reads and writes it."""
from __future__ import annotations

from typing import Any

__all__ = ["JSONObject"]

# A task, an annotation, a result region or a prediction entry: parsed JSON whose fields are what
# Label Studio (or an import, or a user's API call) put there, so every read checks what it finds.
JSONObject = dict[str, Any]
