"""The HTTP routers; :func:`llamabind.server.create_app` includes them all."""
