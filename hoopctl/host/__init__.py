"""Reading the live host safely: files (openat, O_NOFOLLOW), processes, sockets, users."""
