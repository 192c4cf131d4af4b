"""Lua scripts the Redis counter store runs, shipped as package data (``*.txt``)."""
