"""The OpenAI-compatible HTTP server (layer 4): a FastAPI app over the continuous-batching scheduler.

from llamabind.server import ServerConfig, create_app
app = create_app(model, ServerConfig(model_alias="smollm2"))
uvicorn.run(app, host="127.0.0.1", port=8080)
"""

from __future__ import annotations

from .app import create_app
from .config import ServerConfig
from .errors import APIError

__all__ = ["APIError", "ServerConfig", "create_app"]
