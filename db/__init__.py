"""PostgreSQL through asyncpg: the pool, the query funnel, query modules and the migration runner."""
