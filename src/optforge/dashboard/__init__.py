"""``optforge dashboard``: a live local web page over search journals.

- ``journals``: opens each journal read-only and keeps a per-journal snapshot that is only
  recomputed when SQLite says another connection committed (so a search that writes every
  second is not re-read by every poll of every open page);
- ``data``: what the page shows, as JSON-ready dicts, built from ``search.report`` and
  ``program.simplify`` (never its own fitness arithmetic);
- ``server``: the standard library's threaded HTTP server: a fixed set of routes, journals
  addressed by their index on the command line, so no request path ever opens a file;
- ``static/``: the page (HTML, CSS, JS); the plots are drawn by the ``plotly.min.js`` that
  the plotly Python package carries, served from the package, never from a CDN.
"""
