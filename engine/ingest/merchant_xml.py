"""Google Merchant Center XML feeds (RSS 2.0 `<item>`s or Atom `<entry>`s with `g:`
attributes), read as a stream: each item is handed on and dropped, so a feed of a million
products never becomes a million-element tree.

The parser is defusedxml's: entity declarations (the "billion laughs") and external
references are refused, and so is anything that is not well-formed; each is one
FeedError line, since a feed cut off half-way must not publish half a shop.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as safe_tree
from defusedxml import DefusedXmlException

from engine.ingest.feed import FeedError
from engine.ingest.merchant import MerchantRecord

GOOGLE_NS = "http://base.google.com/ns/1.0"
ATOM_NS = "http://www.w3.org/2005/Atom"
_ITEM_TAGS = ("item", f"{{{ATOM_NS}}}entry")
_FEED_ROOTS = ("rss", "feed")
# Plain RSS or Atom elements that stand for Merchant attributes when no g: one is given.
_PLAIN_ATTRIBUTES = ("title", "link", "description")


def merchant_xml_records(path: Path) -> Iterator[MerchantRecord]:
    """The feed's items in order, as attribute records."""
    number = 0
    stack: list[Element] = []
    try:
        for event, element in safe_tree.iterparse(str(path), events=("start", "end")):
            if event == "start":
                if not stack and _local(element.tag) not in _FEED_ROOTS:
                    raise FeedError(
                        f"catalog {path.name} is XML but not a Merchant Center feed (its root "
                        f"is <{_local(element.tag)}>, not <rss> or an Atom <feed>)"
                    )
                stack.append(element)
                continue
            stack.pop()
            if element.tag in _ITEM_TAGS:
                number += 1
                yield MerchantRecord(number, _attributes(element))
                if stack:  # drop the item: memory stays flat however long the feed
                    stack[-1].remove(element)
    except ParseError as exc:
        line, column = exc.position
        raise FeedError(
            f"catalog {path.name} is not well-formed XML (line {line}, column {column}: "
            f"{str(exc).split(':')[0]}); nothing was built from it"
        ) from None
    except DefusedXmlException as exc:
        raise FeedError(
            f"catalog {path.name} declares XML entities or external references "
            f"({type(exc).__name__}), which are refused; nothing was built from it"
        ) from None
    except OSError as exc:
        raise FeedError(f"cannot read catalog {path}: {exc.strerror or exc}") from None


def _attributes(item: Element) -> dict[str, list[str]]:
    """Attribute name (without g:) -> its values in feed order. A g: attribute wins over
    the plain RSS/Atom element of the same name; nested attributes (g:shipping's parts)
    are not product attributes and are left out."""
    google: dict[str, list[str]] = {}
    plain: dict[str, list[str]] = {}
    for child in item:
        if len(child):
            continue
        namespace, name = _split(child.tag)
        value = (child.text or "").strip()
        if namespace == GOOGLE_NS:
            google.setdefault(name, []).append(value)
        elif namespace in ("", ATOM_NS) and name in _PLAIN_ATTRIBUTES:
            if name == "link" and not value:  # Atom: <link href="..."/>
                if child.get("rel", "alternate") != "alternate":
                    continue
                value = (child.get("href") or "").strip()
            plain.setdefault(name, []).append(value)
    return {**plain, **google}


def _split(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        namespace, _, name = tag[1:].partition("}")
        return namespace, name
    return "", tag


def _local(tag: str) -> str:
    return _split(tag)[1]
