"""Serving: an OpenAI-compatible API over a ChatModel and a one-file web page (see server.py)."""
