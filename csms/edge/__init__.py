"""The protocol edge: the websocket gateway and one StationConnection per station socket.

The wire format itself (frames, schemas, CALLERROR codes, redaction) is in csms/protocol; the
handlers per OCPP version in csms/ocpp.
"""
