"""Outgoing mail: the durable outbox and the backends that deliver it."""
