"""Building blocks of the validate stage beyond the Great Expectations suites: the verdict of a check, and the
poisoning (shift) guard."""
