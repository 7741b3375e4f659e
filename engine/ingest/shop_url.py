"""Whether a feed's shop link may become a Buy button: an absolute http(s) URL with a
host, and nothing that makes a link point somewhere other than where it seems to."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

# Characters no host name or address literal holds; a browser would read some of them
# as the end of the host (`\` as `/`), so the link would lead elsewhere.
_NOT_IN_HOST = re.compile(r"[^\w.\-\[\]:%]")


def shop_url_problem(url: str) -> str:
    """Why `url` is refused as a shop link; "" when it is fine."""
    if not url:
        return "missing url (shop link)"
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        return "url contains spaces or control characters"
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        return "url is not an http(s) shop link"
    if "@" in parts.netloc:
        return "url has user info before its host (it would lead to another site)"
    try:
        host, _ = parts.hostname, parts.port
    except ValueError:
        return "url has an invalid host or port"
    if not host:
        return "url has no host"
    if _NOT_IN_HOST.search(host):
        return "url has an invalid host"
    return ""
