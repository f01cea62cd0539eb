"""The OpenAI Responses API surface: ``/v1/responses`` for every provider.

- :mod:`.translate`: Responses request → chat-completions hub request; chat response → Response
  object (sans-IO).
- :mod:`.stream`: chat SSE → Responses events, and the watcher of a passed-through Responses
  stream (sans-IO).
- :mod:`.store`: stored responses for ``previous_response_id``, retrieve and ``input_items``
  (in memory, or NATS JetStream key-value for a fleet).
- :mod:`.handler`: the endpoints; the request itself is sequenced by :mod:`gateway.proxy`.
"""
