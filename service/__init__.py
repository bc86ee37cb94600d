"""The Tally ASGI service."""
