"""The domain model every protocol version maps onto: stations, transactions, id tokens, meter
readings, registration and authorization rules, and the events that describe what happened.

Nothing here does I/O or knows a wire format; OCPP handlers translate their version's payloads
into these types, and the store, the grid and the operator API read them.
"""
