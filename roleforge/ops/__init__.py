"""Operations helpers shared by every stage: errors a user can act on, retries, the audit log, status files, stage
timing, the allocator's settings, atomic file writes."""
