"""Thin HTTP adapters, one folder per endpoint group (protocol, serving logic, router)."""
