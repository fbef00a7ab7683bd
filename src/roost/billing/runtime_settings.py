"""The billing domain's runtime settings (roost.system_settings): an administrator
changes them without a restart; the ``ROOST_BILLING_*`` environment stays the default."""

from __future__ import annotations

from roost.system_settings import declare

REQUIRE_SUBSCRIPTION = declare("billing_require_subscription")
TOOL_CALL_CREDITS = declare("billing_tool_call_credits")
