"""Where limits come from and where the grid's state goes: each signal source (MQTT, the
OpenADR 3 VEN in ``openadr/``, the UFTP aggregator in ``uftp/``) is a
:class:`csms.interfaces.SignalSource` that hands signals to the limit intake; the status
publisher reports each group's state over MQTT."""
