"""LlaMaKey: one master key per person for every cloud LLM API (mitmproxy addons)."""
