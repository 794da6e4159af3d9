"""Building blocks of the evaluate stage: what a candidate is measured on, and the guardrails it must not break."""
