"""Building blocks of the validate stage beyond the data contracts: the poisoning (shift) guard."""
