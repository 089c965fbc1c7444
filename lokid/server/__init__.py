"""The socket edge: bind or inherit the listener, read frames, dispatch, write."""
