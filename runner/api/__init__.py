"""`imgrun serve`: the HTTP API (aiohttp) over the same database as the CLI."""
