"""Everything that sees ASGI messages: the websocket peer, the HTTP routes."""
