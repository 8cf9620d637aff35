"""The demo: composes the daemon (csms) and simulated stations (simulators) from outside both.

`csms demo` runs ``python -m demo`` in its own process, so the daemon never imports this package
or the simulators.
"""
