"""Calendars and events: RFC 5545 recurrence, iCalendar import/export, free/busy (docs/calendar.md)."""
