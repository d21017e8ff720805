"""Integrations with web frameworks: open the runtime with the application, and close it with it.

- :mod:`aiodurable.integrations.starlette`: a lifespan for Starlette and FastAPI (``starlette``
  extra).
- :mod:`aiodurable.integrations.aiohttp`: a ``cleanup_ctx`` entry for aiohttp (``aiohttp`` extra).

Each submodule imports its framework; this package imports neither.
"""
