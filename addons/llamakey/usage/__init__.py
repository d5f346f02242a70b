"""Read token usage out of provider requests and answers, plain or streamed.

Pure functions plus one small state machine (`StreamMeter`); no mitmproxy imports. Every usage
family reports usage differently; this package normalises them all to one `Usage`:

* `input_tokens` never includes cache reads or writes (OpenAI-style `prompt_tokens` does, so the
  cached part is subtracted; Anthropic's `input_tokens` already excludes it);
* `output_tokens` includes reasoning tokens wherever the provider bills them as output (Gemini
  thoughts; xAI and Perplexity report reasoning beside `completion_tokens`, so it is added).

Modules: `record` (`Usage`), `flavors` (what a request is: `ApiFlavor`, model, stream, asking a
stream for its usage), one parser module per usage family (`openai`, `anthropic`, `gemini`,
`cohere`) registered in `parsers`, and `stream` (`StreamMeter`). What a provider's answers look
like is asked of its `llamakey.providers.Provider` entry, never of its name.
"""

from llamakey.usage.flavors import (
    ApiFlavor,
    api_flavor,
    ensure_stream_usage,
    is_stream_request,
    request_model,
)
from llamakey.usage.parsers import PARSERS, PARSERS_BY_FAMILY, usage_from_body
from llamakey.usage.record import Usage
from llamakey.usage.stream import StreamMeter

__all__ = [
    "PARSERS",
    "PARSERS_BY_FAMILY",
    "ApiFlavor",
    "StreamMeter",
    "Usage",
    "api_flavor",
    "ensure_stream_usage",
    "is_stream_request",
    "request_model",
    "usage_from_body",
]
