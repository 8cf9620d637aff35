"""The grid's domain: capacity groups and their topology, the limit book, sessions and stations.

Pure state with synchronous updates (cheap enough for the per-message path), no I/O, no clock of
its own; planning decisions are in profiles/, actions in csms/grid/effects.
"""
