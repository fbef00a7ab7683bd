"""Knowledge: documents, ingestion runs, parsing, chunking, embeddings and search.

The pure pipeline pieces live in submodules and need no database:
``parsing`` (bytes -> sections), ``chunking`` (sections -> token-bounded chunks),
``embeddings`` (chunks -> vectors), ``fetching`` (SSRF-safe web fetch) and ``paths``
(confining server-side file ingestion).  Import them from their modules; this package
stays import-light so loading the ORM models never pulls in parsers or HTTP clients.
"""
