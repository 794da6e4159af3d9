"""Building blocks of the train stage: replay of the base model's own answers, and what training needs beyond TRL."""
