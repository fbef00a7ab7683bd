"""Conversations: encrypted chat sessions and messages, state, history and summaries."""
