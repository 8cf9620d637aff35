"""The reference point: a minimal OCPP 2.0.1 central system written the way the `ocpp` package's
examples do it (a ChargePoint subclass with @on handlers over `websockets.serve`, the package's
default schema validation, state in memory). Our daemon's figures are reported as ratios to it.
"""
