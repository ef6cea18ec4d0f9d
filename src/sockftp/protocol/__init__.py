"""What both ends of a connection share, and that touches no server state."""
