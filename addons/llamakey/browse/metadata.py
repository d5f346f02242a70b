"""The Datasette metadata ``lmk audit browse`` serves: ``llamakey/audit/datasette.yaml``, its
titles and canned queries, filed under the name of the database served."""

from __future__ import annotations

import importlib.resources
from collections.abc import Mapping
from typing import Any, Final

from llamakey.browse import DEFAULT_DATABASE

__all__ = ["MetadataError", "canned_queries", "load_metadata", "metadata_for"]

_METADATA: Final = ("llamakey.audit", "datasette.yaml")


class MetadataError(Exception):
    """The shipped metadata file is not what it should be."""


def load_metadata() -> dict[str, Any]:
    """The shipped Datasette metadata (``llamakey/audit/datasette.yaml``), parsed."""
    import yaml  # Datasette's own dependency: present wherever Datasette is

    text = importlib.resources.files(_METADATA[0]).joinpath(_METADATA[1]).read_text("utf-8")
    metadata = yaml.safe_load(text)
    if not isinstance(metadata, dict):
        raise MetadataError(f"{_METADATA[1]} is not a mapping")
    return metadata


def canned_queries(metadata: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The canned queries of ``metadata``, by name, in file order."""
    queries: dict[str, dict[str, Any]] = metadata["databases"][DEFAULT_DATABASE]["queries"]
    return queries


def metadata_for(database: str, metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``metadata`` (default: the shipped one) with its database section filed under
    ``database``, the name Datasette gives the file it serves (its name without extension)."""
    metadata = dict(load_metadata() if metadata is None else metadata)
    databases = dict(metadata.get("databases", {}))
    section = databases.pop(DEFAULT_DATABASE, {})
    databases[database] = section
    metadata["databases"] = databases
    return metadata
