"""Spoolhouse: durable background jobs for Flask and any WSGI app."""
