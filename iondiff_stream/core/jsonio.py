"""JSON of results: the one converter of NumPy values (``json.dump(..., default=json_default)``)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["json_default"]


def json_default(o: Any) -> Any:
    """JSON value of a NumPy scalar or array; non-finite floats become null (JSON has no NaN).

    Raises
    ------
    TypeError
        For any other object, naming its type.
    """
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, (np.floating, float)):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.bool_):
        return bool(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")
