"""The web console at ``/console``: server-rendered pages (Jinja2, autoescaped) with small
ES modules of Roost's own that call the same JSON API a script would, signed in with an
HttpOnly session cookie (``roost.http.auth``).  It sits on top of every domain, like
``mcpserver``, and imports their services only to check, before rendering, that what a URL
names exists for the signed-in user (row-level security decides; another tenant's id is a
404 page).  See docs/console.md."""
