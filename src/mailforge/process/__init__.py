"""Process plumbing: the supervisor and its children's set-up."""
