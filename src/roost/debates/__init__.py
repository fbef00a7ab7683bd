"""Multi-agent debates with voting (HelixAgent's debate_sessions and debate_turns):
participants argue positions over rounds through the LLM gateway, then rank them; majority,
weighted, Borda or Condorcet (Schulze when there is no Condorcet winner) decides."""
