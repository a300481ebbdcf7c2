"""Storage: one vocabulary of storage dtypes, quantization (int8 weights; full-integer), and byte and RAM accounting."""
