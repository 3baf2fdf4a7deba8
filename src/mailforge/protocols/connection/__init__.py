"""The transport side of every protocol's sessions."""
