"""Cluster-wide state behind one Adapter interface: `local` (one process) and, later, `redis`."""
