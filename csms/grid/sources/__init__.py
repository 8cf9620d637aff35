"""Where limits come from and where the grid's state goes: each signal source (MQTT today;
OpenADR 3 and UFTP next) is a :class:`csms.interfaces.SignalSource` that hands signals to the
limit intake; the status publisher reports each group's state over MQTT."""
