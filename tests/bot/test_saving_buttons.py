"""What a "♡ Save" or remove button carries: within Telegram's 64 bytes for any product id,
and nothing else (page tokens, forged data) taken for one."""

from __future__ import annotations

import pytest

from bot.saving import REMOVE, SAVE, ProductRef, button_data, parse_button_data


@pytest.mark.parametrize("product_id", ["DEMO-001", "SKU:1:blue", "x" * 61, "ü" * 40, "y" * 200])
@pytest.mark.parametrize("action", [SAVE, REMOVE])
def test_any_product_id_fits_a_button(action: str, product_id: str) -> None:
    data = button_data(action, product_id)
    assert len(data.encode()) <= 64
    ref = parse_button_data(data)
    assert ref is not None and ref.action == action
    if len(f"{action}:{product_id}".encode()) <= 64:
        assert ref == ProductRef(action, product_id=product_id)  # the id itself
    else:
        assert ref.product_id is None and ref.digest  # looked up in the catalog


@pytest.mark.parametrize("data", ["fb1:abc:0:n:-:-", "sv", "sv:", "sv#short", "xx:DEMO-001", ""])
def test_other_data_is_not_a_product(data: str) -> None:
    assert parse_button_data(data) is None
