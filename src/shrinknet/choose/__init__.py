"""Stage 3, choose: one checked configuration, the greedy removal loop (Algorithms I and II), the result and checkpoints."""
