"""What shoppers saved, their alert choice, and forgetting them: the state store's side of
saved products (the bots render it). A shopper is the platform and its user id; the row
is made on their first save or /alerts."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from engine.state.schema import (
    alert_outbox,
    clicks,
    saved_products,
    searches,
    shoppers,
    shown_results,
)
from engine.state.store import StateStore


@dataclass(frozen=True)
class Shopper:
    platform: str  # "telegram", "discord"
    user_id: str  # the platform's user id: where alerts go
    language: str = ""


@dataclass(frozen=True)
class SavedItem:
    product_id: str
    saved_at_ms: int


class SaveOutcome(enum.Enum):
    SAVED = "saved"
    ALREADY = "already"  # saving twice is saving once
    FULL = "full"  # the shopper has saved the most allowed


@dataclass(frozen=True)
class Forgotten:
    saved: int
    alerts: int
    searches: int


class SavedProducts:
    def __init__(self, store: StateStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    async def _shopper_id(
        self, connection: AsyncConnection, shopper: Shopper, create: bool
    ) -> int | None:
        where = and_(shoppers.c.platform == shopper.platform, shoppers.c.user_id == shopper.user_id)
        found = (await connection.execute(select(shoppers.c.id).where(where))).scalar()
        if found is not None or not create:
            return None if found is None else int(found)
        row = {
            "platform": shopper.platform,
            "user_id": shopper.user_id,
            "language": shopper.language[:16],
            "created_at": int(self.clock()),
        }
        try:  # a savepoint: a replica creating the same shopper at once is not an error
            async with connection.begin_nested():
                await connection.execute(insert(shoppers), row)
        except IntegrityError:
            pass
        return int((await connection.execute(select(shoppers.c.id).where(where))).scalar_one())

    async def save(
        self,
        shopper: Shopper,
        product_id: str,
        price: float | None,
        in_stock: bool,
        max_saved: int,
    ) -> SaveOutcome:
        """Save a product at its current price and stock (the alerts' baseline)."""
        async with self.store.engine.begin() as connection:
            shopper_id = await self._shopper_id(connection, shopper, create=True)
            mine = saved_products.c.shopper_id == shopper_id
            already = await connection.execute(
                select(saved_products.c.product_id).where(
                    mine, saved_products.c.product_id == product_id
                )
            )
            if already.first() is not None:
                return SaveOutcome.ALREADY
            count = (
                await connection.execute(
                    select(func.count()).select_from(saved_products).where(mine)
                )
            ).scalar_one()
            if count >= max_saved:
                return SaveOutcome.FULL
            row = {
                "shopper_id": shopper_id,
                "product_id": product_id,
                "saved_at_ms": int(self.clock() * 1000),  # newest first, even within a second
                "price": price,
                "in_stock": in_stock,
            }
            try:
                async with connection.begin_nested():
                    await connection.execute(insert(saved_products), row)
            except IntegrityError:  # a double tap handled by two updates at once
                return SaveOutcome.ALREADY
        return SaveOutcome.SAVED

    async def remove(self, shopper: Shopper, product_id: str) -> bool:
        async with self.store.engine.begin() as connection:
            shopper_id = await self._shopper_id(connection, shopper, create=False)
            if shopper_id is None:
                return False
            done = await connection.execute(
                delete(saved_products).where(
                    saved_products.c.shopper_id == shopper_id,
                    saved_products.c.product_id == product_id,
                )
            )
            return bool(done.rowcount)

    async def listed(self, shopper: Shopper, limit: int) -> tuple[list[SavedItem], int]:
        """The newest `limit` saved products, and how many there are in all."""
        async with self.store.engine.connect() as connection:
            shopper_id = await self._shopper_id(connection, shopper, create=False)
            if shopper_id is None:
                return [], 0
            mine = saved_products.c.shopper_id == shopper_id
            rows = await connection.execute(
                select(saved_products.c.product_id, saved_products.c.saved_at_ms)
                .where(mine)
                .order_by(saved_products.c.saved_at_ms.desc(), saved_products.c.product_id)
                .limit(limit)
            )
            items = [SavedItem(pid, at) for pid, at in rows]
            total = (
                await connection.execute(
                    select(func.count()).select_from(saved_products).where(mine)
                )
            ).scalar_one()
        return items, total

    async def set_alerts(self, shopper: Shopper, on: bool) -> None:
        """Alerts on or off; off also drops the alerts not yet sent to them."""
        async with self.store.engine.begin() as connection:
            shopper_id = await self._shopper_id(connection, shopper, create=True)
            await connection.execute(
                update(shoppers).where(shoppers.c.id == shopper_id).values(alerts=on, blocked=False)
            )
            if not on:
                await connection.execute(
                    update(alert_outbox)
                    .where(
                        alert_outbox.c.shopper_id == shopper_id, alert_outbox.c.status == "pending"
                    )
                    .values(status="dropped")
                )

    async def alerts_on(self, shopper: Shopper) -> bool:
        async with self.store.engine.connect() as connection:
            found = await connection.execute(
                select(shoppers.c.alerts).where(
                    shoppers.c.platform == shopper.platform, shoppers.c.user_id == shopper.user_id
                )
            )
            value = found.scalar()
        return True if value is None else bool(value)  # on by default

    async def forget(self, shopper: Shopper, user_hash: str | None) -> Forgotten:
        """Delete everything stored about the shopper: their row with its saved products,
        alert choice and outbox rows, and the searches (with their results and clicks)
        recorded under the keyed hash of their id."""
        async with self.store.engine.begin() as connection:
            shopper_id = await self._shopper_id(connection, shopper, create=False)
            saved = alerts = searched = 0
            if shopper_id is not None:
                saved = (
                    await connection.execute(
                        delete(saved_products).where(saved_products.c.shopper_id == shopper_id)
                    )
                ).rowcount
                alerts = (
                    await connection.execute(
                        delete(alert_outbox).where(alert_outbox.c.shopper_id == shopper_id)
                    )
                ).rowcount
                await connection.execute(delete(shoppers).where(shoppers.c.id == shopper_id))
            if user_hash is not None:
                theirs = select(searches.c.id).where(searches.c.user_hash == user_hash)
                await connection.execute(delete(clicks).where(clicks.c.search_id.in_(theirs)))
                await connection.execute(
                    delete(shown_results).where(shown_results.c.search_id.in_(theirs))
                )
                searched = (
                    await connection.execute(
                        delete(searches).where(searches.c.user_hash == user_hash)
                    )
                ).rowcount
        return Forgotten(saved, alerts, searched)
