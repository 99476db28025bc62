"""Capture: the SDK wrapper, the upstream routes for the proxy, reassembling streams, and pricing."""
