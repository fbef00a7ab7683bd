"""Code versions (HelixAgent's ``code_versions``): a git repository per chat session or run
where an agent's code changes are committed, and their validation."""
