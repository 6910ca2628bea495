"""Serving: the batching engine (engine.py), the OpenAI-compatible HTTP API (server.py, `minigptv2 serve`), remote
image fetching (remote.py) and the Gradio web demo (webui.py). The demo depends on the engine, never the reverse."""
