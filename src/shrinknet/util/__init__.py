"""Small shared machinery below every pipeline stage: signals, thread policy, all-or-none file writes, torch.distributed."""
