"""Migration quality: exact ground truth, search verification, re-embedding plans, index tuning."""
