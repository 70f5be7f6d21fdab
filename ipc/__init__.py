"""Coordination between clusters over Redis: the bus, identify queue, shared limits and caches."""
