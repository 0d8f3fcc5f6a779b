"""The OpenAPI 3.1 description of every route, from openapi.yaml next to this module."""

from __future__ import annotations

from functools import cache
from importlib.metadata import version
from importlib.resources import files
from typing import Any

import yaml


@cache
def document() -> dict[str, Any]:
    """The whole document (read once), with this package's version."""
    data: dict[str, Any] = yaml.safe_load(files("runner.api").joinpath("openapi.yaml").read_text())
    data["info"]["version"] = version("imgrun")
    return data
