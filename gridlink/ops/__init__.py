"""The process's own operations: migrations, maintenance, seeding, the demo, the replica view."""
