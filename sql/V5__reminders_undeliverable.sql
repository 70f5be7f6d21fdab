-- Reminders that cannot be delivered: a final state of their own instead of blind retries (or being
-- marked delivered after five failures), retries that wait for a stored time, and an owner who is
-- told once (shard/reminder_service.py, db/reminders.py).

ALTER TABLE reminders
    -- a retry (after a 5xx, a timeout or a 429) is not claimed before this
    ADD COLUMN next_attempt_at      timestamptz,
    -- undeliverable: given up for good, never claimed again
    ADD COLUMN failed_at            timestamptz,
    ADD COLUMN failure              text CHECK (failure IN ('forbidden', 'gone', 'dm_closed', 'unreadable',
                                                            'gave_up')),
    -- when its owner was told (the next time they used a reminder command)
    ADD COLUMN failure_notified_at  timestamptz,
    ADD CONSTRAINT reminders_failure_reason CHECK ((failed_at IS NULL) = (failure IS NULL));

DROP INDEX reminders_due_idx;
CREATE INDEX reminders_due_idx ON reminders (due_at) WHERE delivered_at IS NULL AND failed_at IS NULL;
-- "which of my reminders failed and I was not told yet": read on every reminder command
CREATE INDEX reminders_failed_unseen_idx ON reminders (user_id)
    WHERE failed_at IS NOT NULL AND failure_notified_at IS NULL;
-- retention of undeliverable reminders, counted from the failure
CREATE INDEX reminders_failed_idx ON reminders (failed_at) WHERE failed_at IS NOT NULL;
