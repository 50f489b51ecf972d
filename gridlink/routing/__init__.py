"""Process infrastructure that decides where a read runs: the database servers by role.

``probes`` asks each configured server what it is (``pg_is_in_recovery()``),
how far it has replayed and on which timeline; ``policy`` turns one round of
those facts into roles, lag and read rotation (a pure function, tested
without servers); ``router`` runs the probe thread and hands out ``Replica``
objects to the read side.
"""
