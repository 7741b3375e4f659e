"""How results look to a shopper, shared by every front-end: captions, prices, shop links
with UTM tags, and the plain-text album of the terminal demo."""

from __future__ import annotations

from functools import lru_cache
from html import escape
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from bot.i18n import FALLBACK, catalog, t
from bot.settings import LinkSettings
from engine.types import Hit, Product, SearchPage

CAPTION_LIMIT = 1024  # Telegram's caption limit; Discord's is larger


def format_price(product: Product) -> str:
    """The price to pay now (the sale price when on sale)."""
    return _amount(product.price, product.currency)


def _amount(value: float | None, currency: str) -> str:
    return "" if value is None else f"{value:,.2f} {currency}".strip()


def former_price(product: Product) -> str:
    """The price before the sale, "" when the product is not on sale."""
    old, now = product.original_price, product.price
    if old is None or now is None or old <= now:
        return ""
    return _amount(old, product.currency)


def price_html(product: Product) -> str:
    """The price for an HTML caption (Telegram): the old price struck through beside the
    new one when on sale."""
    was = former_price(product)
    now = escape(format_price(product))
    return f"<s>{escape(was)}</s> {now}" if was else now


def price_markdown(product: Product) -> str:
    """The price for Discord's markdown: the old price struck through with ~~ on sale."""
    was = former_price(product)
    return f"~~{was}~~ {format_price(product)}" if was else format_price(product)


def price_plain(product: Product, language: str | None) -> str:
    """The price where no markup shows (alt text, the terminal): "19.99 EUR (was 29.99 EUR)"."""
    was = former_price(product)
    now = format_price(product)
    return f"{now} ({t(language, 'price_was', price=was)})" if was else now


def shop_link(url: str, source: str, links: LinkSettings) -> str:
    """The product URL with UTM tags added (tags the shop already set are kept)."""
    return _tagged(url, source, links.utm_medium, links.utm_campaign)


@lru_cache(maxsize=8192)  # every album and every click link asks again for popular products
def _tagged(url: str, source: str, medium: str, campaign: str) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    present = {key for key, _ in query}
    tags = {
        "utm_source": source,
        "utm_medium": medium,
        "utm_campaign": campaign,
    }
    query += [(k, v) for k, v in tags.items() if v and k not in present]
    return urlunsplit(parts._replace(query=urlencode(query)))


def short_title(title: str, limit: int = 48) -> str:
    return title if len(title) <= limit else title[: limit - 1].rstrip() + "…"


def caption_text(hit: Hit, language: str | None = None, markdown: bool = False) -> str:
    """Title, price and stock in one line; `markdown` strikes a sale's old price through
    (Discord embeds), otherwise the old price is said in words."""
    product = hit.product
    price = price_markdown(product) if markdown else price_plain(product, language)
    parts = [product.title, price]
    if not product.in_stock:
        parts.append(f"({t(language, 'out_of_stock')})")
    return " · ".join(p for p in parts if p)


def caption_html(hit: Hit, link: str, language: str | None) -> str:
    product = hit.product
    details = " · ".join(
        p
        for p in (
            price_html(product),
            escape(t(language, "out_of_stock")) if not product.in_stock else "",
        )
        if p
    )
    tail = f'\n{details}\n<a href="{escape(link, quote=True)}">{escape(t(language, "buy"))}</a>'
    room = CAPTION_LIMIT - len(tail) - len("<b></b>")
    return f"<b>{escape(short_title(product.title, max(16, room)))}</b>{tail}"


def button_label(number: int, hit: Hit) -> str:
    price = format_price(hit.product)
    return f"{number}. {short_title(hit.product.title, 40)}" + (f" · {price}" if price else "")


def garment_name(language: str | None, kind: str) -> str:
    """A garment kind of the finder ("outwear") as the shopper calls it ("Jacket"); a kind
    without a translation (a newer finder's) as it is."""
    key = f"garment.{kind}"
    return t(language, key) if key in catalog(FALLBACK) else kind.replace("-", " ").capitalize()


def results_for(language: str | None, kind: str | None) -> str | None:
    """The line that says which garment of the photo an album is for, if any."""
    return t(language, "results_for", garment=garment_name(language, kind)) if kind else None


def garment_button_label(language: str | None, number: int, kind: str | None) -> str:
    """ "1 · Jacket"; the whole photo (kind None) has no number."""
    if kind is None:
        return t(language, "garment.photo")
    return f"{number} · {garment_name(language, kind)}"


def album_as_text(page: SearchPage) -> str:
    """The album a chat would show, as plain text (terminal demo)."""
    if not page.hits:
        return "No similar products found."
    lines = []
    for number, hit in enumerate(page.hits, start=page.offset + 1):
        lines.append(f"{number}. {caption_text(hit)}")
        lines.append(f"   {hit.product.url}")
        lines.append(f"   photo: {hit.image}   similarity {hit.score:.2f}")
    if page.has_more:
        lines.append("[More like this]  [Surprise me]")
    return "\n".join(lines)
