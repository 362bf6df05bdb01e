"""Operator CLI: render user-data, show enrollment QR codes, verify a live server, check policies."""
