"""A result model as JSON data the way every reader gets it: the MCP tools and the CLI's --json.

Floats keep four significant digits (never fewer whole digits): ``-2376.0000000000005`` is
noise to a reader and costs an assistant tokens. One function, so an MCP answer and the
CLI's JSON of the same model cannot round differently. Pure pydantic: the CLI imports this
without the MCP SDK.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from store.trend import round_sig

__all__ = ["answer_data", "answer_json"]


def answer_data(model: BaseModel) -> dict[str, Any]:
    """``model`` as JSON-ready data, floats rounded to four significant digits."""
    data: dict[str, Any] = _rounded(model.model_dump(mode="json"))
    return data


def answer_json(data: object, *, indent: int | None = None) -> str:
    """JSON text of :func:`answer_data` output: compact by default, ``indent`` for a terminal."""
    separators = (",", ":") if indent is None else None
    return json.dumps(data, indent=indent, separators=separators, ensure_ascii=False)


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round_sig(value)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value
