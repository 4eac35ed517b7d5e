"""One attempt on the wire and what it needs: sockets, names, TLS, the guard.

- :mod:`fanout.net.transport`: one attempt of one request on the shared aiohttp
  session; the only module that knows aiohttp's exceptions;
- :mod:`fanout.net.pool`: the connection pool, bounded by the concurrency;
- :mod:`fanout.net.aiohttp_internals`: every use of aiohttp's private internals,
  each with a fallback;
- :mod:`fanout.net.dns`: the c-ares resolver behind a cache that honours TTLs;
- :mod:`fanout.net.nameservers`: DNS server addresses as the options take them;
- :mod:`fanout.net.guard`: which hosts and addresses a fetcher may connect to;
- :mod:`fanout.net.tls`: the TLS settings of a run as one ``ssl.SSLContext``;
- :mod:`fanout.net.proxy`: the proxy each host's requests go through;
- :mod:`fanout.net.cookies`: the opt-in cookie jar, one per origin;
- :mod:`fanout.net.fdlimit`: the file descriptors a concurrency needs.

Nothing is imported here: ``fanout --help`` must not load aiohttp.
"""
