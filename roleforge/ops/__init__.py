"""Operations helpers shared by every stage: errors a user can act on, the audit log, status files, stage timing, atomic file writes."""
