"""Saved products for the chat front-ends: what a "♡ Save" or "remove" button carries, the
product it names in the served catalog, /saved's listing with current prices and stock,
/alerts, /forget. The state store keeps the rows (engine/state/saved.py)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from html import escape

from bot.alerts import AlertService
from bot.click_links import LinkSigner
from bot.i18n import t
from bot.render import format_price, shop_link, short_title
from bot.settings import BotSettings
from engine.search import Engine
from engine.state.saved import Forgotten, SavedItem, SavedProducts, SaveOutcome, Shopper
from engine.state.store import StateStore
from engine.types import Product

SAVE = "sv"
REMOVE = "rm"
MAX_DATA_BYTES = 64  # Telegram's callback data; Discord allows 100
DIGEST_CHARS = 24


@dataclass(frozen=True)
class ProductRef:
    """A product named by a button: its id, or (when the id is too long for a button)
    a digest of it, looked up in the served catalog."""

    action: str  # SAVE or REMOVE
    product_id: str | None = None
    digest: str | None = None


def _digest(product_id: str) -> str:
    return hashlib.sha256(product_id.encode()).hexdigest()[:DIGEST_CHARS]


def button_data(action: str, product_id: str) -> str:
    plain = f"{action}:{product_id}"
    if len(plain.encode()) <= MAX_DATA_BYTES:
        return plain
    return f"{action}#{_digest(product_id)}"


def parse_button_data(data: str) -> ProductRef | None:
    """The product a save/remove button names; None for any other data."""
    action, separator, rest = data[:2], data[2:3], data[3:]
    if action not in (SAVE, REMOVE) or not rest:
        return None
    if separator == ":":
        return ProductRef(action, product_id=rest)
    if separator == "#" and len(rest) == DIGEST_CHARS:
        return ProductRef(action, digest=rest)
    return None


@dataclass(frozen=True)
class SavedEntry:
    item: SavedItem
    product: Product | None  # None: the served catalog no longer has it


@dataclass(frozen=True)
class SavedListing:
    entries: list[SavedEntry]
    total: int


class Saving:
    """The bots' side of saved products, over one state store."""

    def __init__(
        self,
        engine: Engine,
        settings: BotSettings,
        store: StateStore,
        signer: LinkSigner | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.store = store
        self.saved = SavedProducts(store)
        self.signer = signer
        self._digests: tuple[str, dict[str, str]] = ("", {})  # build id -> digest map

    def product(self, ref: ProductRef) -> Product | None:
        """The named product in the served catalog (None when it has none such)."""
        catalog = self.engine.index.catalog
        product_id = ref.product_id
        if product_id is None and ref.digest is not None:
            product_id = self._by_digest().get(ref.digest)
        if product_id is None:
            return None
        return catalog.products([product_id]).get(product_id)

    def _by_digest(self) -> dict[str, str]:
        index = self.engine.index
        build = index.manifest.build_id
        if self._digests[0] != build:  # built once per build, only for ids too long for data
            ids = [pid for pid in index.catalog.product_ids() if len(pid.encode()) > 40]
            self._digests = (build, {_digest(pid): pid for pid in ids})
        return self._digests[1]

    async def save(self, shopper: Shopper, product: Product) -> SaveOutcome:
        return await self.saved.save(
            shopper,
            product.product_id,
            product.price,
            product.in_stock,
            self.settings.saved.max_per_shopper,
        )

    async def remove(self, shopper: Shopper, product_id: str) -> bool:
        return await self.saved.remove(shopper, product_id)

    async def remove_by_digest(self, shopper: Shopper, digest: str) -> bool:
        """Remove the saved product whose (long) id has this digest: looked up among the
        shopper's own, so a product gone from the catalog can still be removed."""
        items, _ = await self.saved.listed(shopper, self.settings.saved.max_per_shopper)
        match = next((i.product_id for i in items if _digest(i.product_id) == digest), None)
        return match is not None and await self.saved.remove(shopper, match)

    async def listing(self, shopper: Shopper) -> SavedListing:
        """The newest saved products with the served catalog's current price and stock."""
        items, total = await self.saved.listed(shopper, self.settings.saved.list_size)
        products = self.engine.index.catalog.products(i.product_id for i in items)
        return SavedListing([SavedEntry(i, products.get(i.product_id)) for i in items], total)

    async def set_alerts(self, shopper: Shopper, on: bool) -> None:
        await self.saved.set_alerts(shopper, on)

    async def alerts_on(self, shopper: Shopper) -> bool:
        return await self.saved.alerts_on(shopper)

    async def forget(self, shopper: Shopper, user_id: int) -> Forgotten:
        user_hash = None
        if self.signer is not None:
            user_hash = self.signer.user_hash(shopper.platform, user_id)
        return await self.saved.forget(shopper, user_hash)

    def buy_link(self, product: Product, platform: str) -> str:
        return shop_link(product.url, platform, self.settings.links)


def entry_line(number: int, entry: SavedEntry, language: str | None) -> str:
    """One line of /saved, as plain text: "1. Floral wrap dress · 39.90 EUR · in stock"."""
    product = entry.product
    if product is None:
        return f"{number}. {entry.item.product_id} · {t(language, 'saved.gone')}"
    stock = t(language, "saved.in_stock" if product.in_stock else "out_of_stock")
    parts = [short_title(product.title, 60), format_price(product), stock]
    return f"{number}. " + " · ".join(p for p in parts if p)


def listing_html(listing: SavedListing, language: str | None, links: list[str | None]) -> str:
    """/saved as HTML (Telegram): the lines, each title linking to the shop."""
    if not listing.entries:
        return escape(t(language, "saved.empty"))
    lines = [escape(t(language, "saved.header", count=listing.total))]
    for number, (entry, link) in enumerate(zip(listing.entries, links, strict=True), start=1):
        line = escape(entry_line(number, entry, language))
        if link is not None and entry.product is not None:
            title = escape(short_title(entry.product.title, 60))
            line = line.replace(title, f'<a href="{escape(link, quote=True)}">{title}</a>', 1)
        lines.append(line)
    if listing.total > len(listing.entries):
        lines.append(escape(t(language, "saved.more", count=listing.total - len(listing.entries))))
    return "\n".join(lines)


def alert_text(kind: str, product: Product, old_price: float | None, language: str | None) -> str:
    """ "Price drop: Floral wrap dress, now 39.90 EUR (was 59.90 EUR)" or "Back in stock: ..." """
    now = format_price(product)
    if kind == "price_drop" and old_price is not None:
        was = format_price(Product("", "", "", "", price=old_price, currency=product.currency))
        return t(language, "alert.price_drop", title=product.title, price=now, was=was)
    return t(language, "alert.back_in_stock", title=product.title, price=now)


def outcome_text(outcome: SaveOutcome, language: str | None) -> str:
    return t(language, f"saved.{outcome.value}")


def forgotten_text(forgotten: Forgotten, language: str | None) -> str:
    return t(
        language,
        "forget.done",
        saved=forgotten.saved,
        alerts=forgotten.alerts,
        searches=forgotten.searches,
    )


def privacy_text(settings: BotSettings, language: str | None) -> str:
    """What is stored about a shopper and for how long (/privacy)."""
    return t(language, "privacy", retention_days=settings.analytics.retention_days)


async def open_saving(
    engine: Engine, settings: BotSettings, store: StateStore | None, signer: LinkSigner | None
) -> tuple[Saving | None, AlertService | None]:
    """Saved products (and their alerts, when on) over the state store; none without one."""
    if store is None or not settings.saved.enabled:
        return None, None
    saving = Saving(engine, settings, store, signer)
    alerts = AlertService(engine, store, settings.alerts) if settings.alerts.enabled else None
    return saving, alerts
