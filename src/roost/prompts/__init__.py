"""System prompts: keyed, immutable versions, labels, and the resolution order
user -> tenant -> factory default; chat and agents take their prompts from here by key."""
