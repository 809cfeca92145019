"""Reporting: figures and results files."""
