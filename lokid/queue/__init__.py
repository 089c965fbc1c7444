"""The task queue: one `Queue` per project (core), the unit of work its operations commit
through, the breakers of its task types and their YAML configuration, Loki Mode's task shapes,
and the area that opens queues, writes their views and sweeps leases for every project."""
