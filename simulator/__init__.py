"""A Discord-compatible gateway and REST server that unmodified discord.py connects to."""
