"""Wavu: billing and subscriber management for Kenyan internet service providers."""
