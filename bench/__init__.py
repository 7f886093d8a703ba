"""Benchmarks of the runtime hot paths (`make bench`)."""
