"""The management API and the operator console, on the admin port
(``SCEPLINE_ADMIN_HOST``:``SCEPLINE_ADMIN_PORT``, never the SCEP port):
``scepline up`` serves them, ``scepline admin-api`` alone.

- ``api.py``: ``/api/v1`` (JSON, Bearer tokens);
- ``console.py`` and ``templates/``: the console at ``/`` (sessions, CSRF);
- ``tokens.py``: tokens (``scepline admin token``), no web framework;
- ``security.py``: sessions, CSRF, the wrong-token limit, secure headers;
- ``context.py``: what they work on, the dashboard and health figures;
- ``cas.py``: the CA generations from their certificates.

The actions themselves are the command line's (``scepline.actions``).
Nothing is imported here: the command line's token commands import
``tokens.py`` without the web stack.
"""
