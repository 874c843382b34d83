"""``/v1/amortized/realtime``: think-while-listening over a WebSocket, plus a simulate route."""
