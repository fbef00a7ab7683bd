"""The chat domain's runtime settings (roost.system_settings): an administrator changes
them without a restart; ``ROOST_CHAT_*`` stay the defaults."""

from __future__ import annotations

from roost.system_settings import declare

CONTEXT_MESSAGES = declare("chat_context_messages")
MAX_MESSAGE_CHARS = declare("chat_max_message_chars")
