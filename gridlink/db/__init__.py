"""PostgreSQL plumbing: URLs (one host or several), WAL positions, dead-peer TCP options."""
