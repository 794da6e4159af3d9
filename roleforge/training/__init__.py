"""Building blocks of the train stage: where a training runs (backends), one training in this process, the DPO engines
(roleforge's own and TRL's), reference log-probs, replay of the base model's answers, preemption."""
