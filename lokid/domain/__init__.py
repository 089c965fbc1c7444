"""Pure rules: data in, decisions out, no I/O (the clock is a parameter)."""
