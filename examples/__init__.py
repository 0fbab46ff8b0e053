"""Examples of using tinybert_tf (not part of the installed package)."""
