"""Reporting leaves: image grids, sweep and paper tables, the published numbers."""
