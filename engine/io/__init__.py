"""Adapters: thin asyncio shells around the pure core (DNS, HTTPS, SMTP, SQLite)."""
