"""How results look to a shopper, shared by every front-end."""

from __future__ import annotations

from engine.types import Hit, Product, SearchPage


def format_price(product: Product) -> str:
    if product.price is None:
        return ""
    return f"{product.price:,.2f} {product.currency}".strip()


def caption_text(hit: Hit) -> str:
    product = hit.product
    parts = [product.title, format_price(product)]
    if not product.in_stock:
        parts.append("(out of stock)")
    return " · ".join(p for p in parts if p)


def album_as_text(page: SearchPage) -> str:
    """The album a chat would show, as plain text (terminal demo, logs of demo runs)."""
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
