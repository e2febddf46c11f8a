"""Serving: the one request path (`pipeline`), each mode's chain of responders and the running
omproxy (`runtime`), the admin API (`admin`), the observers (`observers/`), the HTTP edge, the only
aiohttp importer (`http/`), process life (`process`) and `--workers` (`workers`)."""
