"""The cluster runtime: the plan, the launcher, the status service and the ``innkeeper`` CLI."""
