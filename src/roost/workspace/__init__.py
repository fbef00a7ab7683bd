"""The workspace: projects (grouping agents, workflows, documents, chat sessions and
tasks) and prioritised tasks with a stored, always-current score."""
