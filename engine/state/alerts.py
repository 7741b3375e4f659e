"""Price-drop and back-in-stock alerts, the state store's side.

When a new build is served, `find_alerts` compares its prices with each saved product's
baseline (the price and stock the shopper last heard of) in a few set-based statements,
and writes the alerts into an outbox in the same transaction as it moves the baselines
on and records the build as compared: a build is compared once, even across replicas or
a restart. The sender then takes outbox rows one by one: claim (pending -> sending), send,
mark sent. A row left `sending` by a process that died while sending it is never sent
again ("unknown"): a shopper must never get an alert twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy import (
    Float,
    and_,
    cast,
    delete,
    func,
    insert,
    literal,
    not_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from engine.state.schema import alert_builds, alert_outbox, alert_prices, saved_products, shoppers
from engine.state.store import StateStore

PRICE_DROP = "price_drop"
BACK_IN_STOCK = "back_in_stock"
ROWS_PER_STATEMENT = 500

# A product's price and stock in a build: (price or None, in stock).
PriceAndStock = tuple[float | None, bool]


async def saved_product_ids(store: StateStore) -> list[str]:
    """Every product someone saved (what a new build's catalog is asked about)."""
    async with store.engine.connect() as connection:
        rows = await connection.execute(select(saved_products.c.product_id).distinct())
        return [pid for (pid,) in rows]


async def find_alerts(
    store: StateStore,
    build_id: str,
    prices: dict[str, PriceAndStock],
    min_drop_percent: float,
    clock: Callable[[], float] = time.time,
) -> int | None:
    """Compare build `build_id`'s `prices` of saved products (`build_prices`) with their
    baselines; queue the alerts. Returns how many were queued, or None when the build
    was already compared."""
    now = int(clock())
    async with store.engine.begin() as connection:
        try:
            async with connection.begin_nested():
                await connection.execute(insert(alert_builds), {"build_id": build_id, "at": now})
        except IntegrityError:
            return None
        await _stage(connection, build_id, prices)
        queued = await _queue(connection, build_id, min_drop_percent, now)
        await _move_baselines(connection, build_id)
        await connection.execute(delete(alert_prices).where(alert_prices.c.build_id == build_id))
    return queued


async def _stage(
    connection: AsyncConnection, build_id: str, prices: dict[str, PriceAndStock]
) -> None:
    rows = [
        {"build_id": build_id, "product_id": pid, "price": price, "in_stock": stock}
        for pid, (price, stock) in prices.items()
    ]
    for start in range(0, len(rows), ROWS_PER_STATEMENT * 10):
        await connection.execute(
            insert(alert_prices), rows[start : start + ROWS_PER_STATEMENT * 10]
        )


async def _queue(
    connection: AsyncConnection, build_id: str, min_drop_percent: float, now: int
) -> int:
    saved, new = saved_products.c, alert_prices.c
    joined = saved_products.join(
        alert_prices, and_(new.product_id == saved.product_id, new.build_id == build_id)
    ).join(shoppers, shoppers.c.id == saved.shopper_id)
    reachable = and_(shoppers.c.alerts, not_(shoppers.c.blocked), new.in_stock)
    keep = cast(literal(1.0 - min_drop_percent / 100.0), Float)
    events = {
        PRICE_DROP: and_(
            saved.in_stock,
            saved.price.is_not(None),
            new.price.is_not(None),
            new.price < saved.price,
            new.price <= saved.price * keep,
        ),
        BACK_IN_STOCK: not_(saved.in_stock),
    }
    columns = [
        "shopper_id",
        "product_id",
        "event",
        "old_price",
        "new_price",
        "created_at",
        "status",
    ]
    queued = 0
    for event, changed in events.items():
        chosen = (
            select(
                saved.shopper_id,
                saved.product_id,
                literal(f"{event}:{build_id}"),
                saved.price,
                new.price,
                literal(now),
                literal("pending"),
            )
            .select_from(joined)
            .where(reachable, changed)
        )
        done = await connection.execute(insert(alert_outbox).from_select(columns, chosen))
        queued += max(done.rowcount, 0)
    return queued


async def _move_baselines(connection: AsyncConnection, build_id: str) -> None:
    """Each compared product's baseline becomes this build's price and stock (a product
    the build lacks keeps its price, out of stock). Products saved since the comparison
    began were not staged and keep the baseline they were saved with."""
    saved, new = saved_products.c, alert_prices.c
    # UPDATE ... FROM (PostgreSQL, SQLite >= 3.33): one join, not a subquery per row.
    await connection.execute(
        update(saved_products)
        .where(new.build_id == build_id, new.product_id == saved.product_id)
        .values(price=func.coalesce(new.price, saved.price), in_stock=new.in_stock)
    )


def build_prices(
    product_ids: Iterable[str], found: dict[str, PriceAndStock]
) -> dict[str, PriceAndStock]:
    """What `find_alerts` compares: each product asked about, one the build lacks as
    (no price, out of stock)."""
    return {pid: found.get(pid, (None, False)) for pid in product_ids}


@dataclass(frozen=True)
class PendingAlert:
    id: int
    shopper_id: int
    platform: str
    user_id: str
    language: str
    product_id: str
    kind: str  # PRICE_DROP or BACK_IN_STOCK
    old_price: float | None
    new_price: float | None


class Outbox:
    def __init__(self, store: StateStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    async def give_up_interrupted(self, older_than_s: float) -> int:
        """Rows claimed longer ago than `older_than_s` and never marked: their process died
        while sending. Marked unknown, never sent again."""
        cutoff = int(self.clock() - older_than_s)
        async with self.store.engine.begin() as connection:
            done = await connection.execute(
                update(alert_outbox)
                .where(alert_outbox.c.status == "sending", alert_outbox.c.claimed_at <= cutoff)
                .values(status="unknown")
            )
        return max(done.rowcount, 0)

    async def pending(self, platforms: Iterable[str], limit: int) -> list[PendingAlert]:
        """The oldest alerts waiting for one of `platforms`, to shoppers who still want them."""
        out, who = alert_outbox.c, shoppers.c
        query = (
            select(
                out.id,
                out.shopper_id,
                who.platform,
                who.user_id,
                who.language,
                out.product_id,
                out.event,
                out.old_price,
                out.new_price,
            )
            .select_from(alert_outbox.join(shoppers, who.id == out.shopper_id))
            .where(
                out.status == "pending",
                who.platform.in_(list(platforms)),
                who.alerts,
                not_(who.blocked),
            )
            .order_by(out.id)
            .limit(limit)
        )
        async with self.store.engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [
            PendingAlert(i, s, p, u, lang, pid, event.split(":", 1)[0], old, new)
            for i, s, p, u, lang, pid, event, old, new in rows
        ]

    async def claim(self, alert_id: int) -> bool:
        """pending -> sending, for exactly one sender (another replica's claim loses)."""
        async with self.store.engine.begin() as connection:
            done = await connection.execute(
                update(alert_outbox)
                .where(alert_outbox.c.id == alert_id, alert_outbox.c.status == "pending")
                .values(
                    status="sending",
                    claimed_at=int(self.clock()),
                    attempts=alert_outbox.c.attempts + 1,
                )
            )
        return done.rowcount == 1

    async def _mark(self, alert_id: int, status: str, **values: object) -> None:
        async with self.store.engine.begin() as connection:
            await connection.execute(
                update(alert_outbox)
                .where(alert_outbox.c.id == alert_id)
                .values(status=status, **values)
            )

    async def sent(self, alert_id: int) -> None:
        await self._mark(alert_id, "sent", sent_at=int(self.clock()))

    async def failed(self, alert_id: int) -> None:
        await self._mark(alert_id, "failed")

    async def retry_later(self, alert_id: int, max_attempts: int) -> None:
        """Not delivered (a network error): pending again, until `max_attempts`."""
        async with self.store.engine.begin() as connection:
            await connection.execute(
                update(alert_outbox)
                .where(alert_outbox.c.id == alert_id)
                .values(status="pending", claimed_at=None)
            )
            await connection.execute(
                update(alert_outbox)
                .where(alert_outbox.c.id == alert_id, alert_outbox.c.attempts >= max_attempts)
                .values(status="failed")
            )

    async def blocked(self, shopper_id: int) -> None:
        """The shopper blocked the bot: never message them again; their alerts dropped."""
        async with self.store.engine.begin() as connection:
            await connection.execute(
                update(shoppers).where(shoppers.c.id == shopper_id).values(blocked=True)
            )
            await connection.execute(
                update(alert_outbox)
                .where(
                    alert_outbox.c.shopper_id == shopper_id,
                    alert_outbox.c.status.in_(("pending", "sending")),
                )
                .values(status="dropped")
            )
