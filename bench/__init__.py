"""Benchmarks for GitHub issue 6: protocol scale, grid reaction time, planning quality, hosting capacity.

Run with ``python -m bench all`` (or one part: ``scale``, ``reaction``, ``planning``, ``hosting``).
Every figure is measured against a baseline in the same run; see docs/benchmarks.md.
"""
