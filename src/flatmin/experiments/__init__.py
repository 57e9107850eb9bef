"""Experiments: one module each, called by the thin workflow scripts."""
