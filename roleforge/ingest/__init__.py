"""Building blocks of the ingest stage: feedback lines to contract-checked, PII-scrubbed, hashed rows."""
