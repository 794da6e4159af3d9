"""Data contracts: the row schemas every stage relies on, and the Great Expectations suites that guard them."""
