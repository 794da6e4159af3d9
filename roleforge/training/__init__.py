"""Building blocks of the train stage: the DPO engines (roleforge's own and TRL's), reference log-probs, replay of the base model's answers, preemption."""
