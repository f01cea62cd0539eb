"""An OpenAI-compatible LLM gateway: in-memory decisions, OpenTelemetry traces over NATS."""

__version__ = "0.1.0"
