"""Maintainer tooling for the book (not part of the advbook library)."""
