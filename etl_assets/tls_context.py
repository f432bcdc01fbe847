"""PyMySQL connections that build their TLS context once per process, not once per connection."""

from __future__ import annotations

import ssl
import threading

from pymysql.connections import Connection

_contexts: dict[tuple, ssl.SSLContext] = {}
_building = threading.Lock()


class SharedTlsConnection(Connection):
    """A PyMySQL connection whose TLS context is shared with every other connection of the same
    TLS settings.

    PyMySQL 1.2 builds a context for every connection, even to a server that offers no TLS (its
    preferred mode), and each one loads the system's CA certificates: 43 ms a connection here, a
    fifth of a load that finds its file unchanged. A context holds settings only, no session, so
    sharing it changes nothing of what is verified: each distinct CA, certificate, key and
    verification setting gets its own. The CA files are read once per process, as a run is one
    process.
    """

    def _create_ssl_ctx(self, sslp):
        if isinstance(sslp, ssl.SSLContext):
            return sslp
        key = tuple(sorted(sslp.items()))
        with _building:
            if key not in _contexts:
                _contexts[key] = super()._create_ssl_ctx(sslp)
            return _contexts[key]
