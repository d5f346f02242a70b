"""Recorded provider answers, byte for byte as they are sent, and the usage each one reports."""

# ruff: noqa: E501  (provider payloads are kept on one line, byte for byte as they are sent)

from __future__ import annotations

from llamakey.usage import Usage

# --------------------------------------------------------------------------------------------
# Non-streamed answers

OPENAI_CHAT = b"""{
  "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
  "object": "chat.completion",
  "created": 1741569952,
  "model": "gpt-4.1-2025-04-14",
  "choices": [
    {
      "index": 0,
      "message": {"role": "assistant", "content": "The \\"usage\\": {} field is fine.", "refusal": null, "annotations": []},
      "logprobs": null,
      "finish_reason": "stop"
    }
  ],
  "usage": {
    "prompt_tokens": 1919,
    "completion_tokens": 10,
    "total_tokens": 1929,
    "prompt_tokens_details": {"cached_tokens": 1792, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
  },
  "service_tier": "default"
}"""

OPENAI_REASONING_CHAT = b"""{"id":"chatcmpl-9","object":"chat.completion","created":1741570000,"model":"o4-mini-2025-04-16",
"choices":[{"index":0,"message":{"role":"assistant","content":"42"},"finish_reason":"length"}],
"usage":{"prompt_tokens":120,"completion_tokens":1200,"total_tokens":1320,
"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},
"completion_tokens_details":{"reasoning_tokens":1024,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}"""

OPENAI_RESPONSES = b"""{
  "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
  "object": "response",
  "created_at": 1741476542,
  "status": "completed",
  "error": null,
  "incomplete_details": null,
  "model": "o4-mini-2025-04-16",
  "output": [
    {"type": "reasoning", "id": "rs_1", "summary": []},
    {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
     "content": [{"type": "output_text", "text": "In a peaceful grove beneath a silver moon...", "annotations": []}]}
  ],
  "usage": {
    "input_tokens": 2048,
    "input_tokens_details": {"cached_tokens": 1024},
    "output_tokens": 300,
    "output_tokens_details": {"reasoning_tokens": 256},
    "total_tokens": 2348
  }
}"""

OPENAI_RESPONSES_INCOMPLETE = b"""{"id":"resp_2","object":"response","created_at":1741476600,"status":"incomplete",
"incomplete_details":{"reason":"max_output_tokens"},"model":"gpt-4.1-2025-04-14","output":[],
"usage":{"input_tokens":50,"input_tokens_details":{"cached_tokens":0},"output_tokens":16,
"output_tokens_details":{"reasoning_tokens":0},"total_tokens":66}}"""

OPENAI_EMBEDDINGS = b"""{
  "object": "list",
  "data": [{"object": "embedding", "index": 0, "embedding": [0.0023064255, -0.009327292, -0.0028842222]}],
  "model": "text-embedding-3-small",
  "usage": {"prompt_tokens": 8, "total_tokens": 8}
}"""

AZURE_CHAT = b"""{"choices":[{"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}},"finish_reason":"stop","index":0,"logprobs":null,"message":{"content":"Hello! How can I help?","refusal":null,"role":"assistant"}}],"created":1741569000,"id":"chatcmpl-AzURE1","model":"gpt-4o-2024-11-20","object":"chat.completion","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}],"system_fingerprint":"fp_ee1d74bde0","usage":{"completion_tokens":7,"completion_tokens_details":{"accepted_prediction_tokens":0,"audio_tokens":0,"reasoning_tokens":0,"rejected_prediction_tokens":0},"prompt_tokens":2065,"prompt_tokens_details":{"audio_tokens":0,"cached_tokens":1920},"total_tokens":2072}}"""

ANTHROPIC_MESSAGE = b"""{
  "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
  "type": "message",
  "role": "assistant",
  "model": "claude-sonnet-4-20250514",
  "content": [{"type": "text", "text": "Hello!"}],
  "stop_reason": "end_turn",
  "stop_sequence": null,
  "usage": {
    "input_tokens": 12,
    "cache_creation_input_tokens": 1500,
    "cache_read_input_tokens": 3000,
    "cache_creation": {"ephemeral_5m_input_tokens": 1500, "ephemeral_1h_input_tokens": 0},
    "output_tokens": 6,
    "service_tier": "standard"
  }
}"""

GEMINI_RESPONSE = b"""{
  "candidates": [
    {
      "content": {"parts": [{"text": "Cached answer."}], "role": "model"},
      "finishReason": "STOP",
      "index": 0
    }
  ],
  "usageMetadata": {
    "promptTokenCount": 1200,
    "candidatesTokenCount": 50,
    "totalTokenCount": 1450,
    "cachedContentTokenCount": 1000,
    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 1200}],
    "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 1000}],
    "thoughtsTokenCount": 200
  },
  "modelVersion": "gemini-2.5-flash",
  "responseId": "mG7HaLCjC4bKxs0P1_CQmA0"
}"""

COHERE_V1_CHAT = b"""{"response_id":"a29d2ee8","text":"LLMs are neural networks.","generation_id":"c1a6b0c4","chat_history":[{"role":"USER","message":"What is an LLM?"},{"role":"CHATBOT","message":"LLMs are neural networks."}],"finish_reason":"COMPLETE","meta":{"api_version":{"version":"1"},"billed_units":{"input_tokens":17,"output_tokens":6},"tokens":{"input_tokens":83,"output_tokens":6}}}"""

COHERE_V2_CHAT = b"""{"id":"c14c80c3-18eb-4519-9460-6c92edd8cfb4","message":{"role":"assistant","content":[{"type":"text","text":"LLMs are neural networks."}]},"finish_reason":"COMPLETE","usage":{"billed_units":{"input_tokens":2000,"output_tokens":50},"tokens":{"input_tokens":2070,"output_tokens":50},"cached_tokens":1500}}"""

COHERE_V2_EMBED = b"""{"id":"da6e531f","embeddings":{"float":[[0.016296387,-0.008354187]]},"texts":["hello"],"meta":{"api_version":{"version":"2"},"billed_units":{"input_tokens":1}}}"""

MISTRAL_CHAT = b"""{"id":"cf79f7daaee244b1a0ae5c7b1444424a","object":"chat.completion","model":"mistral-small-latest","usage":{"prompt_tokens":24,"completion_tokens":27,"total_tokens":51,"prompt_audio_seconds":null},"created":1741569000,"choices":[{"index":0,"message":{"content":"Bonjour!","tool_calls":null,"prefix":false,"role":"assistant"},"finish_reason":"stop"}]}"""

GROQ_CHAT = b"""{"id":"chatcmpl-f51b2cd2-bef7-417e-964e-a08f0b513c22","object":"chat.completion","created":1730241104,"model":"llama-3.3-70b-versatile","choices":[{"index":0,"message":{"role":"assistant","content":"Fast."},"logprobs":null,"finish_reason":"stop"}],"usage":{"queue_time":0.037493756,"prompt_tokens":18,"prompt_time":0.000680594,"completion_tokens":556,"completion_time":0.463333333,"total_tokens":574,"total_time":0.464013927,"prompt_tokens_details":{"cached_tokens":0}},"system_fingerprint":"fp_179b0f92c9","x_groq":{"id":"req_01jbd6g2qdfw2adyrt2az8hz4w"}}"""

DEEPSEEK_CHAT = b"""{"id":"930c60df-bf64-41c9-a88e-3ec75f81e00e","object":"chat.completion","created":1741569000,"model":"deepseek-reasoner","choices":[{"index":0,"message":{"role":"assistant","content":"9.11 < 9.8","reasoning_content":"Compare decimals..."},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":1500,"completion_tokens":200,"total_tokens":1700,"prompt_tokens_details":{"cached_tokens":1024},"completion_tokens_details":{"reasoning_tokens":150},"prompt_cache_hit_tokens":1024,"prompt_cache_miss_tokens":476},"system_fingerprint":"fp_5417b77867_prod0225"}"""

OPENROUTER_CHAT = b"""{"id":"gen-1741569000-abc","provider":"OpenAI","model":"openai/gpt-4o-mini","object":"chat.completion","created":1741569000,"choices":[{"logprobs":null,"finish_reason":"stop","native_finish_reason":"stop","index":0,"message":{"role":"assistant","content":"Hi","refusal":null,"reasoning":null}}],"usage":{"prompt_tokens":194,"completion_tokens":2,"total_tokens":196,"cost":0.0000303,"is_byok":false,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"cost_details":{"upstream_inference_cost":null,"upstream_inference_prompt_cost":0.0000291,"upstream_inference_completions_cost":0.0000012},"completion_tokens_details":{"reasoning_tokens":0,"image_tokens":0}}}"""

PERPLEXITY_CHAT = b"""{"id":"3c90c3cc-0d44-4b50-8888-8dd25736052a","model":"sonar-pro","created":1741569000,"usage":{"prompt_tokens":8,"completion_tokens":150,"total_tokens":178,"search_context_size":"low","citation_tokens":20,"num_search_queries":1,"reasoning_tokens":0,"cost":{"input_tokens_cost":0.000024,"output_tokens_cost":0.00255,"request_cost":0.006,"total_cost":0.008574}},"object":"chat.completion","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"The answer [1]."}}],"citations":["https://example.com"],"search_results":[]}"""

XAI_CHAT = b"""{"id":"a3d1008e-4544-40d4-d075-11527e794e4a","object":"chat.completion","created":1741569000,"model":"grok-3-mini","choices":[{"index":0,"message":{"role":"assistant","content":"101 multiplied by 3 is 303.","reasoning_content":"Let me calculate...","refusal":null},"finish_reason":"stop"}],"usage":{"prompt_tokens":32,"completion_tokens":9,"total_tokens":135,"prompt_tokens_details":{"text_tokens":32,"audio_tokens":0,"image_tokens":0,"cached_tokens":6},"completion_tokens_details":{"reasoning_tokens":94,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0},"num_sources_used":0,"cost_in_usd_ticks":1234500},"system_fingerprint":"fp_6ca29cf396"}"""

TOGETHER_CHAT = b"""{"id":"8e5dbc5e-0dbd-4ef1-b2b5-2d1a0a7f5a1e","object":"chat.completion","created":1741569000,"model":"meta-llama/Llama-3.3-70B-Instruct-Turbo","prompt":[],"choices":[{"finish_reason":"eos","seed":4221863839443458000,"logprobs":null,"index":0,"message":{"role":"assistant","content":"Hi!","tool_calls":[]}}],"usage":{"prompt_tokens":20,"completion_tokens":50,"total_tokens":70,"cached_tokens":0}}"""

FIREWORKS_CHAT = b"""{"id":"48b4ec56-d0cd-4d59-9a4d-8f1ad2e1b1f5","object":"chat.completion","created":1741569000,"model":"accounts/fireworks/models/llama-v3p1-8b-instruct","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"total_tokens":39,"completion_tokens":20,"prompt_tokens_details":{"cached_tokens":0}}}"""

HF_ROUTER_CHAT = b"""{"object":"chat.completion","id":"","created":1741569000,"model":"meta-llama/Llama-3.1-8B-Instruct","system_fingerprint":"3.2.1-sha-4d28897","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":42,"completion_tokens":3,"total_tokens":45}}"""

# --------------------------------------------------------------------------------------------
# Streams

OPENAI_STREAM_HEAD = (
    b'data: {"id":"chatcmpl-Bx1","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_06737a9306","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}\n'
    b"\n"
    b'data: {"id":"chatcmpl-Bx1","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_06737a9306","choices":[{"index":0,"delta":{"content":"The \\"usage\\": {\\"prompt_tokens\\": 5} key"},"logprobs":null,"finish_reason":null}],"usage":null}\n'
    b"\n"
    b'data: {"id":"chatcmpl-Bx1","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_06737a9306","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}\n'
    b"\n"
)
OPENAI_USAGE_EVENT = (
    b'data: {"id":"chatcmpl-Bx1","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_06737a9306","choices":[],"usage":{"prompt_tokens":1200,"completion_tokens":17,"total_tokens":1217,"prompt_tokens_details":{"cached_tokens":1024,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}\n'
    b"\n"
)
OPENAI_STREAM = OPENAI_STREAM_HEAD + OPENAI_USAGE_EVENT + b"data: [DONE]\n\n"
OPENAI_STREAM_USAGE = Usage(
    input_tokens=176, output_tokens=17, cache_read_tokens=1024, reasoning_tokens=0,
    model="gpt-4o-mini-2024-07-18", finish_reason="stop",
)  # fmt: skip

# Azure: \r\n line ends, a first chunk with choices: [] that is NOT the usage chunk (prompt
# filter results), and content filter results on every chunk.
AZURE_STREAM_HEAD = (
    b'data: {"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}],"usage":null}\r\n'
    b"\r\n"
    b'data: {"choices":[{"content_filter_results":{},"delta":{"content":"Hi","refusal":null,"role":"assistant"},"finish_reason":null,"index":0,"logprobs":null}],"created":1741569000,"id":"chatcmpl-Az2","model":"gpt-4o-2024-11-20","object":"chat.completion.chunk","system_fingerprint":"fp_ee1d74bde0","usage":null}\r\n'
    b"\r\n"
    b'data: {"choices":[{"content_filter_results":{},"delta":{},"finish_reason":"stop","index":0,"logprobs":null}],"created":1741569000,"id":"chatcmpl-Az2","model":"gpt-4o-2024-11-20","object":"chat.completion.chunk","system_fingerprint":"fp_ee1d74bde0","usage":null}\r\n'
    b"\r\n"
)
AZURE_USAGE_EVENT = (
    b'data: {"choices":[],"created":1741569000,"id":"chatcmpl-Az2","model":"gpt-4o-2024-11-20","object":"chat.completion.chunk","system_fingerprint":"fp_ee1d74bde0","usage":{"completion_tokens":2,"completion_tokens_details":{"accepted_prediction_tokens":0,"audio_tokens":0,"reasoning_tokens":0,"rejected_prediction_tokens":0},"prompt_tokens":30,"prompt_tokens_details":{"audio_tokens":0,"cached_tokens":0},"total_tokens":32}}\r\n'
    b"\r\n"
)
AZURE_STREAM = AZURE_STREAM_HEAD + AZURE_USAGE_EVENT + b"data: [DONE]\r\n\r\n"
AZURE_STREAM_USAGE = Usage(
    input_tokens=30, output_tokens=2, cache_read_tokens=0, reasoning_tokens=0,
    model="gpt-4o-2024-11-20", finish_reason="stop",
)  # fmt: skip

DEEPSEEK_STREAM_HEAD = (
    b'data: {"id":"5f0b1c2d","object":"chat.completion.chunk","created":1741569000,"model":"deepseek-chat","system_fingerprint":"fp_3a5770e1b4_prod0225","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"5f0b1c2d","object":"chat.completion.chunk","created":1741569000,"model":"deepseek-chat","system_fingerprint":"fp_3a5770e1b4_prod0225","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":"stop"}],"usage":null}\n\n'
)
DEEPSEEK_USAGE_EVENT = b'data: {"id":"5f0b1c2d","object":"chat.completion.chunk","created":1741569000,"model":"deepseek-chat","system_fingerprint":"fp_3a5770e1b4_prod0225","choices":[],"usage":{"prompt_tokens":1500,"completion_tokens":1,"total_tokens":1501,"prompt_tokens_details":{"cached_tokens":1408},"prompt_cache_hit_tokens":1408,"prompt_cache_miss_tokens":92}}\n\n'
DEEPSEEK_STREAM = DEEPSEEK_STREAM_HEAD + DEEPSEEK_USAGE_EVENT + b"data: [DONE]\n\n"
DEEPSEEK_STREAM_USAGE = Usage(
    input_tokens=92,
    output_tokens=1,
    cache_read_tokens=1408,
    model="deepseek-chat",
    finish_reason="stop",
)

RESPONSES_STREAM = (
    b"event: response.created\n"
    b'data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_1","object":"response","created_at":1741476542,"status":"in_progress","error":null,"incomplete_details":null,"model":"o4-mini-2025-04-16","output":[],"usage":null}}\n'
    b"\n"
    b"event: response.in_progress\n"
    b'data: {"type":"response.in_progress","sequence_number":1,"response":{"id":"resp_1","object":"response","created_at":1741476542,"status":"in_progress","model":"o4-mini-2025-04-16","output":[],"usage":null}}\n'
    b"\n"
    b"event: response.output_text.delta\n"
    b'data: {"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_1","output_index":1,"content_index":0,"delta":"In a peaceful grove"}\n'
    b"\n"
    b"event: response.output_text.done\n"
    b'data: {"type":"response.output_text.done","sequence_number":5,"item_id":"msg_1","output_index":1,"content_index":0,"text":"In a peaceful grove"}\n'
    b"\n"
    b"event: response.completed\n"
    b'data: {"type":"response.completed","sequence_number":6,"response":{"id":"resp_1","object":"response","created_at":1741476542,"status":"completed","error":null,"incomplete_details":null,"model":"o4-mini-2025-04-16","output":[{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[{"type":"output_text","text":"In a peaceful grove","annotations":[]}]}],"usage":{"input_tokens":2048,"input_tokens_details":{"cached_tokens":1024},"output_tokens":300,"output_tokens_details":{"reasoning_tokens":256},"total_tokens":2348}}}\n'
    b"\n"
)
RESPONSES_STREAM_USAGE = Usage(
    input_tokens=1024, output_tokens=300, cache_read_tokens=1024, reasoning_tokens=256,
    model="o4-mini-2025-04-16", finish_reason="completed",
)  # fmt: skip

# Anthropic: message_start carries input and cache counts; message_delta is cumulative, the
# second one (newer API versions) repeating the input counts.
ANTHROPIC_STREAM = (
    b"event: message_start\n"
    b'data: {"type":"message_start","message":{"id":"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-20250514","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":472,"cache_creation_input_tokens":0,"cache_read_input_tokens":2048,"output_tokens":2,"service_tier":"standard"}}}\n'
    b"\n"
    b"event: content_block_start\n"
    b'data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n'
    b"\n"
    b"event: ping\n"
    b'data: {"type": "ping"}\n'
    b"\n"
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}\n'
    b"\n"
    b"event: message_delta\n"
    b'data: {"type":"message_delta","delta":{"stop_reason":null,"stop_sequence":null},"usage":{"output_tokens":15}}\n'
    b"\n"
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" world"}}\n'
    b"\n"
    b"event: content_block_stop\n"
    b'data: {"type":"content_block_stop","index":0}\n'
    b"\n"
    b"event: message_delta\n"
    b'data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"input_tokens":472,"cache_creation_input_tokens":0,"cache_read_input_tokens":2048,"output_tokens":89}}\n'
    b"\n"
    b"event: message_stop\n"
    b'data: {"type":"message_stop"}\n'
    b"\n"
)
ANTHROPIC_STREAM_USAGE = Usage(
    input_tokens=472, output_tokens=89, cache_read_tokens=2048, cache_write_tokens=0,
    model="claude-sonnet-4-20250514", finish_reason="end_turn",
)  # fmt: skip

# Classic Anthropic: the final message_delta carries only output_tokens (input from the start).
ANTHROPIC_STREAM_CLASSIC = (
    b"event: message_start\n"
    b'data: {"type":"message_start","message":{"id":"msg_2","type":"message","role":"assistant","content":[],"model":"claude-3-5-haiku-20241022","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"output_tokens":1}}}\n'
    b"\n"
    b"event: message_delta\n"
    b'data: {"type":"message_delta","delta":{"stop_reason":"max_tokens","stop_sequence":null},"usage":{"output_tokens":64}}\n'
    b"\n"
    b"event: message_stop\n"
    b'data: {"type":"message_stop"}\n'
    b"\n"
)
ANTHROPIC_CLASSIC_USAGE = Usage(
    input_tokens=25, output_tokens=64, model="claude-3-5-haiku-20241022", finish_reason="max_tokens"
)

GEMINI_SSE_STREAM = (
    b'data: {"candidates": [{"content": {"parts": [{"text": "The"}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 8,"totalTokenCount": 38,"promptTokensDetails": [{"modality": "TEXT","tokenCount": 8}],"thoughtsTokenCount": 30},"modelVersion": "gemini-2.5-flash","responseId": "xyz"}\r\n'
    b"\r\n"
    b'data: {"candidates": [{"content": {"parts": [{"text": " sky is blue because"}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 8,"candidatesTokenCount": 10,"totalTokenCount": 48,"promptTokensDetails": [{"modality": "TEXT","tokenCount": 8}],"thoughtsTokenCount": 30},"modelVersion": "gemini-2.5-flash","responseId": "xyz"}\r\n'
    b"\r\n"
    b'data: {"candidates": [{"content": {"parts": [{"text": " of Rayleigh scattering."}],"role": "model"},"finishReason": "STOP","index": 0}],"usageMetadata": {"promptTokenCount": 8,"candidatesTokenCount": 25,"totalTokenCount": 63,"promptTokensDetails": [{"modality": "TEXT","tokenCount": 8}],"thoughtsTokenCount": 30},"modelVersion": "gemini-2.5-flash","responseId": "xyz"}\r\n'
    b"\r\n"
)
GEMINI_STREAM_USAGE = Usage(
    input_tokens=8,
    output_tokens=55,
    reasoning_tokens=30,
    model="gemini-2.5-flash",
    finish_reason="STOP",
)

# Without alt=sse: one pretty-printed JSON array, delivered incrementally.
GEMINI_ARRAY_STREAM = b"""[{
  "candidates": [
    {
      "content": {
        "parts": [
          {
            "text": "The"
          }
        ],
        "role": "model"
      },
      "index": 0
    }
  ],
  "usageMetadata": {
    "promptTokenCount": 8,
    "totalTokenCount": 38,
    "promptTokensDetails": [
      {
        "modality": "TEXT",
        "tokenCount": 8
      }
    ],
    "thoughtsTokenCount": 30
  },
  "modelVersion": "gemini-2.5-flash",
  "responseId": "xyz"
}
,
{
  "candidates": [
    {
      "content": {
        "parts": [
          {
            "text": " sky is blue because of Rayleigh scattering. {\\"usageMetadata\\": {}}"
          }
        ],
        "role": "model"
      },
      "finishReason": "STOP",
      "index": 0
    }
  ],
  "usageMetadata": {
    "promptTokenCount": 8,
    "candidatesTokenCount": 25,
    "totalTokenCount": 63,
    "promptTokensDetails": [
      {
        "modality": "TEXT",
        "tokenCount": 8
      }
    ],
    "thoughtsTokenCount": 30
  },
  "modelVersion": "gemini-2.5-flash",
  "responseId": "xyz"
}
]"""

# Cohere v1: newline-delimited JSON; the last line has no trailing newline.
COHERE_V1_STREAM = (
    b'{"is_finished":false,"event_type":"stream-start","generation_id":"77b3a6a6-4f6b-4c5c-a9c2-1c2f7f6a4d2e"}\n'
    b'{"is_finished":false,"event_type":"text-generation","text":"Hello"}\n'
    b'{"is_finished":false,"event_type":"text-generation","text":" there"}\n'
    b'{"is_finished":true,"event_type":"stream-end","response":{"response_id":"d1","text":"Hello there","generation_id":"77b3a6a6-4f6b-4c5c-a9c2-1c2f7f6a4d2e","chat_history":[{"role":"USER","message":"hi"},{"role":"CHATBOT","message":"Hello there"}],"finish_reason":"COMPLETE","meta":{"api_version":{"version":"1"},"billed_units":{"input_tokens":57,"output_tokens":2},"tokens":{"input_tokens":123,"output_tokens":2}}},"finish_reason":"COMPLETE"}'
)
COHERE_V1_STREAM_USAGE = Usage(input_tokens=57, output_tokens=2, finish_reason="COMPLETE")

COHERE_V2_STREAM = (
    b"event: message-start\n"
    b'data: {"id":"29f14a5a-11de-4cae-9800-25e4747408ed","type":"message-start","delta":{"message":{"role":"assistant","content":[],"tool_plan":"","tool_calls":[],"citations":[]}}}\n'
    b"\n"
    b"event: content-start\n"
    b'data: {"type":"content-start","index":0,"delta":{"message":{"content":{"type":"text","text":""}}}}\n'
    b"\n"
    b"event: content-delta\n"
    b'data: {"type":"content-delta","index":0,"delta":{"message":{"content":{"text":"Hello"}}}}\n'
    b"\n"
    b"event: content-end\n"
    b'data: {"type":"content-end","index":0}\n'
    b"\n"
    b"event: message-end\n"
    b'data: {"type":"message-end","delta":{"finish_reason":"COMPLETE","usage":{"billed_units":{"input_tokens":5,"output_tokens":11},"tokens":{"input_tokens":71,"output_tokens":11},"cached_tokens":0}}}\n'
    b"\n"
    b"data: [DONE]\n"
    b"\n"
)
COHERE_V2_STREAM_USAGE = Usage(
    input_tokens=5, output_tokens=11, cache_read_tokens=0, finish_reason="COMPLETE"
)

MISTRAL_STREAM = (
    b'data: {"id":"cf79f7da","object":"chat.completion.chunk","created":1741569000,"model":"mistral-small-latest","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n'
    b'data: {"id":"cf79f7da","object":"chat.completion.chunk","created":1741569000,"model":"mistral-small-latest","choices":[{"index":0,"delta":{"content":"Bonjour"},"finish_reason":null}]}\n\n'
    b'data: {"id":"cf79f7da","object":"chat.completion.chunk","created":1741569000,"model":"mistral-small-latest","choices":[{"index":0,"delta":{"content":"!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"total_tokens":35,"completion_tokens":25}}\n\n'
    b"data: [DONE]\n\n"
)
MISTRAL_STREAM_USAGE = Usage(
    input_tokens=10, output_tokens=25, model="mistral-small-latest", finish_reason="stop"
)

GROQ_STREAM = (
    b'data: {"id":"chatcmpl-3a8b","object":"chat.completion.chunk","created":1730241104,"model":"llama-3.3-70b-versatile","system_fingerprint":"fp_179b0f92c9","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"x_groq":{"id":"req_01jbd6g2qdfw2adyrt2az8hz4w"}}\n\n'
    b'data: {"id":"chatcmpl-3a8b","object":"chat.completion.chunk","created":1730241104,"model":"llama-3.3-70b-versatile","system_fingerprint":"fp_179b0f92c9","choices":[{"index":0,"delta":{"content":"Fast"},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-3a8b","object":"chat.completion.chunk","created":1730241104,"model":"llama-3.3-70b-versatile","system_fingerprint":"fp_179b0f92c9","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"x_groq":{"id":"req_01jbd6g2qdfw2adyrt2az8hz4w","usage":{"queue_time":0.019,"prompt_tokens":40,"prompt_time":0.002,"completion_tokens":120,"completion_time":0.1,"total_tokens":160,"total_time":0.102}}}\n\n'
    b"data: [DONE]\n\n"
)
GROQ_STREAM_USAGE = Usage(
    input_tokens=40, output_tokens=120, model="llama-3.3-70b-versatile", finish_reason="stop"
)

# OpenRouter: SSE comments keep the connection alive; usage (with cost) in the last message.
OPENROUTER_STREAM = (
    b": OPENROUTER PROCESSING\n\n"
    b'data: {"id":"gen-1","provider":"Anthropic","model":"anthropic/claude-3.5-haiku","object":"chat.completion.chunk","created":1741569000,"choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":null,"native_finish_reason":null,"logprobs":null}]}\n\n'
    b": OPENROUTER PROCESSING\n\n"
    b'data: {"id":"gen-1","provider":"Anthropic","model":"anthropic/claude-3.5-haiku","object":"chat.completion.chunk","created":1741569000,"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":"stop","native_finish_reason":"end_turn","logprobs":null}]}\n\n'
    b'data: {"id":"gen-1","provider":"Anthropic","model":"anthropic/claude-3.5-haiku","object":"chat.completion.chunk","created":1741569000,"choices":[],"usage":{"prompt_tokens":3000,"completion_tokens":12,"total_tokens":3012,"cost":0.00042,"is_byok":false,"prompt_tokens_details":{"cached_tokens":2000,"cache_write_tokens":500},"cost_details":{"upstream_inference_cost":null},"completion_tokens_details":{"reasoning_tokens":0}}}\n\n'
    b"data: [DONE]\n\n"
)
OPENROUTER_STREAM_USAGE = Usage(
    input_tokens=500, output_tokens=12, cache_read_tokens=2000, cache_write_tokens=500,
    reasoning_tokens=0, provider_cost_usd=0.00042, model="anthropic/claude-3.5-haiku",
    finish_reason="stop",
)  # fmt: skip

# Perplexity repeats the running usage on every chunk; the last one is complete.
PERPLEXITY_STREAM = (
    b'data: {"id":"3c90c3cc","model":"sonar","created":1741569000,"usage":{"prompt_tokens":8,"completion_tokens":1,"total_tokens":9,"search_context_size":"low"},"object":"chat.completion.chunk","choices":[{"index":0,"finish_reason":null,"delta":{"role":"assistant","content":"The"}}]}\r\n\r\n'
    b'data: {"id":"3c90c3cc","model":"sonar","created":1741569000,"usage":{"prompt_tokens":8,"completion_tokens":40,"total_tokens":48,"search_context_size":"low","citation_tokens":0,"num_search_queries":1,"reasoning_tokens":0,"cost":{"input_tokens_cost":0.000008,"output_tokens_cost":0.00004,"request_cost":0.005,"total_cost":0.005048}},"object":"chat.completion.chunk","choices":[{"index":0,"finish_reason":"stop","delta":{"role":"assistant","content":" answer"}}]}\r\n\r\n'
)
PERPLEXITY_STREAM_USAGE = Usage(
    input_tokens=8, output_tokens=40, reasoning_tokens=0, provider_cost_usd=0.005048, model="sonar",
    finish_reason="stop",
)  # fmt: skip

XAI_STREAM = (
    b'data: {"id":"a3d1008e","object":"chat.completion.chunk","created":1741569000,"model":"grok-4-0709","choices":[{"index":0,"delta":{"content":"Hi","role":"assistant"}}],"system_fingerprint":"fp_1"}\n\n'
    b'data: {"id":"a3d1008e","object":"chat.completion.chunk","created":1741569000,"model":"grok-4-0709","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":700,"completion_tokens":20,"total_tokens":1020,"prompt_tokens_details":{"text_tokens":700,"audio_tokens":0,"image_tokens":0,"cached_tokens":640},"completion_tokens_details":{"reasoning_tokens":300,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0},"num_sources_used":0,"cost_in_usd_ticks":52000000},"system_fingerprint":"fp_1"}\n\n'
    b"data: [DONE]\n\n"
)
XAI_STREAM_USAGE = Usage(
    input_tokens=60, output_tokens=320, cache_read_tokens=640, reasoning_tokens=300,
    provider_cost_usd=0.0052, model="grok-4-0709", finish_reason="stop",
)  # fmt: skip

TOGETHER_STREAM = (
    b'data: {"id":"8e5dbc5e","object":"chat.completion.chunk","created":1741569000,"model":"meta-llama/Llama-3.3-70B-Instruct-Turbo","choices":[{"index":0,"text":"Hi","logprobs":null,"finish_reason":null,"seed":null,"delta":{"token_id":13347,"role":"assistant","content":"Hi","tool_calls":null}}],"usage":null}\n\n'
    b'data: {"id":"8e5dbc5e","object":"chat.completion.chunk","created":1741569000,"model":"meta-llama/Llama-3.3-70B-Instruct-Turbo","choices":[{"index":0,"text":"","logprobs":null,"finish_reason":"eos","seed":4221863839443458000,"delta":{"token_id":128009,"role":"assistant","content":"","tool_calls":null}}],"usage":{"prompt_tokens":20,"completion_tokens":2,"total_tokens":22,"cached_tokens":0}}\n\n'
    b"data: [DONE]\n\n"
)
TOGETHER_STREAM_USAGE = Usage(
    input_tokens=20, output_tokens=2, cache_read_tokens=0,
    model="meta-llama/Llama-3.3-70B-Instruct-Turbo", finish_reason="eos",
)  # fmt: skip

FIREWORKS_STREAM = (
    b'data: {"id":"48b4ec56","object":"chat.completion.chunk","created":1741569000,"model":"accounts/fireworks/models/llama-v3p1-8b-instruct","choices":[{"index":0,"delta":{"role":"assistant"},"finish_reason":null}],"usage":null}\n\n'
    b'data: {"id":"48b4ec56","object":"chat.completion.chunk","created":1741569000,"model":"accounts/fireworks/models/llama-v3p1-8b-instruct","choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}],"usage":null}\n\n'
    b'data: {"id":"48b4ec56","object":"chat.completion.chunk","created":1741569000,"model":"accounts/fireworks/models/llama-v3p1-8b-instruct","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"total_tokens":39,"completion_tokens":20}}\n\n'
    b"data: [DONE]\n\n"
)
FIREWORKS_STREAM_USAGE = Usage(
    input_tokens=19, output_tokens=20, model="accounts/fireworks/models/llama-v3p1-8b-instruct",
    finish_reason="stop",
)  # fmt: skip

# (id, provider, flavor, stream, usage it reports)
STREAM_CASES: list[tuple[str, str, str, bytes, Usage]] = [
    ("openai-include-usage", "openai", "openai-chat", OPENAI_STREAM, OPENAI_STREAM_USAGE),
    ("azure", "azure", "openai-chat", AZURE_STREAM, AZURE_STREAM_USAGE),
    ("deepseek", "deepseek", "openai-chat", DEEPSEEK_STREAM, DEEPSEEK_STREAM_USAGE),
    ("responses", "openai", "openai-responses", RESPONSES_STREAM, RESPONSES_STREAM_USAGE),
    ("anthropic", "anthropic", "anthropic-messages", ANTHROPIC_STREAM, ANTHROPIC_STREAM_USAGE),
    (
        "anthropic-classic",
        "anthropic",
        "anthropic-messages",
        ANTHROPIC_STREAM_CLASSIC,
        ANTHROPIC_CLASSIC_USAGE,
    ),
    ("gemini-sse", "gemini", "gemini", GEMINI_SSE_STREAM, GEMINI_STREAM_USAGE),
    ("gemini-array", "gemini", "gemini", GEMINI_ARRAY_STREAM, GEMINI_STREAM_USAGE),
    ("cohere-v1", "cohere", "cohere-v1", COHERE_V1_STREAM, COHERE_V1_STREAM_USAGE),
    ("cohere-v2", "cohere", "cohere-v2", COHERE_V2_STREAM, COHERE_V2_STREAM_USAGE),
    ("mistral", "mistral", "openai-chat", MISTRAL_STREAM, MISTRAL_STREAM_USAGE),
    ("groq", "groq", "openai-chat", GROQ_STREAM, GROQ_STREAM_USAGE),
    ("openrouter", "openrouter", "openai-chat", OPENROUTER_STREAM, OPENROUTER_STREAM_USAGE),
    ("perplexity", "perplexity", "openai-chat", PERPLEXITY_STREAM, PERPLEXITY_STREAM_USAGE),
    ("xai", "xai", "openai-chat", XAI_STREAM, XAI_STREAM_USAGE),
    ("together", "together", "openai-chat", TOGETHER_STREAM, TOGETHER_STREAM_USAGE),
    ("fireworks", "fireworks", "openai-chat", FIREWORKS_STREAM, FIREWORKS_STREAM_USAGE),
]
