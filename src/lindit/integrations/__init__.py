"""Integrations of lindit with model libraries."""
