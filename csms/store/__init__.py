"""Durable records behind small interfaces (csms/store/base.py); SQLite and Redis backends;
:func:`csms.store.factory.open_store` picks the one the config asks for."""
