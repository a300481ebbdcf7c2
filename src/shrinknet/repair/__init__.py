"""Stage 4, repair: least-squares refit, fine-tuning, training and the from-scratch baseline."""
