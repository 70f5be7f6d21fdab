"""The bot process: one ``ClusterBot`` (an ``AutoShardedBot``) per cluster, and its commands."""
