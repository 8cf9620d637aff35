"""OCPP-J wire format: frames, compiled schema validation and error codes."""
