"""The agent's network side: one ASGI app (:mod:`.app`) serving the WebSocket protocol
(:mod:`.transport`), the HTTP API and the package index, and the index-only listener
(:mod:`.index_listener`)."""
