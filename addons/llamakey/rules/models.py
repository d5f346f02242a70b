"""The model allow-list: which model(s) a request asks for, read where each API puts it, and
glob patterns to check them against.

`read_models` never guesses. It says the endpoint takes no model (`NONE`), names the models
(`FOUND`), says the request is a batch whose models are inside a file or inline requests
(`BATCH`: allowed only where the endpoint allow-list lists it explicitly), that an endpoint
which needs a model names none we can read (`UNKNOWN`), or that the request names it in ways
that could be read differently (`AMBIGUOUS`: a JSON key given twice, two multipart fields, two
query parameters, or a path and a body that disagree).

Where a model is read:
- the path: Gemini / Vertex ``…/models/{m}:verb`` (``tunedModels/{m}:verb`` reads as
  ``tunedModels/{m}``), Azure ``/openai/deployments/{d}/…``, Hugging Face
  ``/hf-inference/models/{org}/{name}``;
- the query: ``?model=`` (the Realtime API);
- the body: the JSON key ``model`` (``models/`` stripped for Gemini), every ``requests[].model``
  of Gemini ``batchEmbedContents``, and the ``model`` field of a ``multipart/form-data`` body
  (audio transcriptions and translations, image edits and variations).
The path is matched only once it is canonical (`rules.paths`), so no escape is decoded here.
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass
from enum import Enum
from urllib.parse import parse_qsl

_GEMINI_PATH = re.compile(r"/(models|tunedModels)/([^/:]+):([A-Za-z]+)$")
_AZURE_PATH = re.compile(r"^/openai/deployments/([^/]+)(?:/|$)")
_HF_PATH = re.compile(r"/hf-inference/models/([^/]+)(?:/([^/]+))?")
_BATCH_VERBS = frozenset({"batchGenerateContent", "asyncBatchEmbedContent"})
# Endpoints that need a model besides those `usage.api_flavor` already names (by path suffix).
_MODEL_SUFFIXES = (
    "/messages/count_tokens",
    "/audio/transcriptions",
    "/audio/translations",
    "/audio/speech",
    "/images/generations",
    "/images/edits",
    "/images/variations",
    "/moderations",
    "/fine_tuning/jobs",
    "/rerank",
    "/realtime",
    "/realtime/sessions",
    "/realtime/client_secrets",
    "/videos",
)
_BATCH_SUFFIXES = ("/batches",)
_BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^\s;]+))', re.IGNORECASE)
_DISPOSITION_NAME = re.compile(rb'(?:^|;)\s*name\*?\s*=\s*(?:"([^"]*)"|([^\s;]+))', re.IGNORECASE)


class ModelKind(Enum):
    NONE = "none"
    FOUND = "found"
    BATCH = "batch"
    UNKNOWN = "unknown"
    AMBIGUOUS = "ambiguous"


@dataclass(frozen=True, slots=True)
class ModelRead:
    kind: ModelKind
    models: tuple[str, ...] = ()
    why: str = ""


class _Duplicate(Exception):
    pass


def _no_duplicate_model(pairs: list[tuple[str, object]]) -> dict[str, object]:
    seen: set[str] = set()
    for key, _ in pairs:
        if key == "model" and key in seen:
            raise _Duplicate
        seen.add(key)
    return dict(pairs)


def read_models(
    known_api: bool,
    method: str,
    target: str,
    content_type: str,
    content_encoding: str,
    body: bytes,
) -> ModelRead:
    """Which model(s) the request asks for (module docstring). `known_api`: the request speaks
    an API that names a model (`usage.api_flavor` is not ``other``)."""
    path, _, query = target.partition("?")
    if method.upper() not in ("POST", "PUT", "PATCH", "GET") or (
        method.upper() == "GET" and "/realtime" not in path
    ):
        return ModelRead(ModelKind.NONE)
    sources: list[tuple[str, str]] = []  # (where, model)
    gemini = _GEMINI_PATH.search(path)
    needs = known_api or path.endswith(_MODEL_SUFFIXES)
    if gemini is not None:
        if gemini.group(3) in _BATCH_VERBS:
            return ModelRead(ModelKind.BATCH, why=f"{gemini.group(3)} runs inline requests")
        name = gemini.group(2)
        sources.append(("path", name if gemini.group(1) == "models" else f"tunedModels/{name}"))
        needs = True
    elif azure := _AZURE_PATH.search(path):
        sources.append(("path", azure.group(1)))
        needs = True
    elif hf := _HF_PATH.search(path):
        org, name = hf.group(1), hf.group(2)
        sources.append(
            ("path", f"{org}/{name}" if name and name not in ("v1", "pipeline") else org)
        )
        needs = True
    elif method.upper() == "POST" and path.endswith(_BATCH_SUFFIXES):
        return ModelRead(ModelKind.BATCH, why="a batch names its models inside its input file")
    if not needs:
        return ModelRead(ModelKind.NONE)
    queried = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == "model"]
    if len(queried) > 1:
        return ModelRead(ModelKind.AMBIGUOUS, why="the query names 'model' more than once")
    sources += [("query", v) for v in queried]
    if body:
        if content_encoding.strip().lower() not in ("", "identity"):
            return ModelRead(ModelKind.UNKNOWN, why="the body is content-encoded")
        if content_type.split(";", 1)[0].strip().lower() == "multipart/form-data":
            found = _multipart_models(content_type, body)
            if found is None:
                return ModelRead(ModelKind.AMBIGUOUS, why="the form is not one we can read")
            if len(found) > 1:
                return ModelRead(ModelKind.AMBIGUOUS, why="the form has 'model' more than once")
            sources += [("form", v) for v in found]
        else:
            try:
                value = json.loads(body, object_pairs_hook=_no_duplicate_model)
            except _Duplicate:
                return ModelRead(ModelKind.AMBIGUOUS, why="the JSON body has 'model' twice")
            except ValueError:
                value = None
            if isinstance(value, dict):
                sources += _json_models(value, gemini is not None)
    models = tuple(dict.fromkeys(model for _, model in sources))
    if not models:
        return ModelRead(ModelKind.UNKNOWN, why="no model is named where this API puts it")
    if len(models) > 1:
        where = ", ".join(f"{w} {m!r}" for w, m in sources)
        return ModelRead(ModelKind.AMBIGUOUS, models, why=f"the request names {where}")
    return ModelRead(ModelKind.FOUND, models)


def _json_models(value: dict[str, object], gemini: bool) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    model = value.get("model")
    if "model" in value:
        found.append(("body", model if isinstance(model, str) else repr(model)))
    if gemini and isinstance(requests := value.get("requests"), list):
        for item in requests:
            inner = item.get("model") if isinstance(item, dict) else None
            if isinstance(inner, str):
                found.append(("body", inner))
    if gemini:
        found = [(w, m.removeprefix("models/")) for w, m in found]
    return found


def _multipart_models(content_type: str, body: bytes) -> list[str] | None:
    """Every ``model`` field's value of a form; None if the form cannot be read for sure."""
    boundaries = _BOUNDARY.findall(content_type)
    if len(boundaries) != 1:
        return None
    boundary = ("--" + (boundaries[0][0] or boundaries[0][1])).encode()
    values: list[str] = []
    parts = body.split(boundary)
    for part in parts[1:]:
        if part.startswith(b"--"):
            break  # the closing delimiter
        head, sep, content = part.partition(b"\r\n\r\n")
        if not sep:
            return None
        names: list[bytes] = []
        for line in head.split(b"\r\n"):
            field_name, _, rest = line.partition(b":")
            if field_name.strip().lower() == b"content-disposition":
                names += [q or t for q, t in _DISPOSITION_NAME.findall(rest)]
        if len(names) != 1:
            return None
        if names[0].lower() == b"model":
            if names[0] != b"model":
                return None
            try:
                values.append(content.removesuffix(b"\r\n").decode())
            except UnicodeDecodeError:
                return None
    return values


@dataclass(frozen=True, slots=True)
class ModelRules:
    """The models one user may ask one provider for: glob patterns, case-sensitive."""

    patterns: tuple[str, ...]
    regex: re.Pattern[str]

    def allows(self, model: str) -> bool:
        return self.regex.fullmatch(model) is not None


def check_model_pattern(text: str) -> str:
    """`text` if it is a valid model glob; ValueError otherwise."""
    if not text or not text.isprintable() or text != text.strip():
        raise ValueError("expected a model name or glob, e.g. 'gpt-4o*'")
    re.compile(fnmatch.translate(text))
    return text


def compile_models(patterns: tuple[str, ...]) -> ModelRules:
    if not patterns:
        return ModelRules((), re.compile(r"(?!)"))
    union = "|".join(f"(?:{fnmatch.translate(p)})" for p in patterns)
    return ModelRules(patterns, re.compile(union, re.DOTALL))
