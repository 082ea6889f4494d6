"""Mapping chain transfers to transactions rows: sides, types, exact amounts, status."""

from decimal import Context, Decimal

from chains.base import Transfer
from indexer.model import ROW_COLUMNS, TokenMeta, WalletRef, scale, transfer_rows, usd_value

A, B, C = "0x" + "a" * 40, "0x" + "b" * 40, "0x" + "c" * 40
TOKEN = "0x" + "1" * 40
WALLETS = {A: WalletRef(1, 10, A), B: WalletRef(2, 20, B)}
TOKENS = {
    TOKEN: TokenMeta(TOKEN, "USDT", 6, Decimal("1.00")),
    None: TokenMeta(None, "BNB", 18, None),
}


def transfer(frm: str, to: str, amount: int, token: str | None = TOKEN, block: int = 100, success: bool = True,
             log_index: int = 0) -> Transfer:
    return Transfer("0x" + "f" * 64, log_index, block, "0xh", 3, frm, to, amount, token, 1_700_000_000,
                    success=success)


def col(row: tuple, name: str) -> object:  # type: ignore[type-arg]
    return row[ROW_COLUMNS.index(name)]


def test_incoming_is_a_deposit_and_outgoing_a_withdrawal() -> None:
    rows = transfer_rows([transfer(C, A, 5), transfer(A, C, 7)], WALLETS, TOKENS, chain="bsc", head_number=100, final_number=90)
    assert [(col(r, "wallet_id"), col(r, "tx_type")) for r in rows] == [(1, "deposit"), (1, "withdrawal")]


def test_a_transfer_between_two_known_wallets_gives_one_row_per_side() -> None:
    rows = transfer_rows([transfer(A, B, 5)], WALLETS, TOKENS, chain="bsc", head_number=100, final_number=90)
    assert sorted((col(r, "wallet_id"), col(r, "user_id"), col(r, "tx_type")) for r in rows) == [
        (1, 10, "p2p_transfer"),
        (2, 20, "p2p_transfer"),
    ]


def test_a_transfer_to_oneself_is_one_row() -> None:
    rows = transfer_rows([transfer(A, A, 5)], WALLETS, TOKENS, chain="bsc", head_number=100, final_number=90)
    assert len(rows) == 1


def test_unknown_wallets_and_unknown_tokens_give_no_rows() -> None:
    other_token = "0x" + "2" * 40
    rows = transfer_rows([transfer(C, C, 5), transfer(C, A, 5, token=other_token)], WALLETS, TOKENS,
                         chain="bsc", head_number=100, final_number=90)
    assert rows == []


def test_uint256_max_is_scaled_exactly() -> None:
    big = 2**256 - 1
    rows = transfer_rows([transfer(C, A, big)], WALLETS, TOKENS, chain="bsc", head_number=100, final_number=90)
    assert col(rows[0], "amount_raw") == Decimal(big)
    assert col(rows[0], "amount") == Decimal(big).scaleb(-6, context=Context(prec=100))
    assert str(col(rows[0], "amount")).replace(".", "") == str(big)


def test_scale_and_price_never_round() -> None:
    assert scale(1, 18) == Decimal("0.000000000000000001")
    assert scale(123456789, 6) == Decimal("123.456789")
    # to the cent, half-even (banker's rounding: no upward drift over many rows)
    assert usd_value(Decimal("0.005"), Decimal("1.00")) == Decimal("0.00")
    assert usd_value(Decimal("0.015"), Decimal("1.00")) == Decimal("0.02")
    assert usd_value(Decimal(2**256 - 1), Decimal("1.00")) == Decimal(2**256 - 1)
    assert usd_value(Decimal("5"), None) is None


def test_status_and_confirmations_follow_finality() -> None:
    rows = transfer_rows(
        [transfer(C, A, 1, block=95), transfer(C, A, 1, block=80, log_index=1),
         transfer(A, C, 1, block=70, success=False, log_index=2)],
        WALLETS, TOKENS, chain="bsc", head_number=100, final_number=90,
    )
    assert [(col(r, "status"), col(r, "confirmations")) for r in rows] == [
        ("pending", 6), ("confirmed", 21), ("failed", 31)
    ]


def test_native_transfers_carry_no_token_address_and_no_price() -> None:
    rows = transfer_rows([transfer(C, A, 10**18, token=None, log_index=-1)], WALLETS, TOKENS,
                         chain="bsc", head_number=100, final_number=90)
    assert col(rows[0], "token") == "BNB" and col(rows[0], "token_address") is None
    assert col(rows[0], "amount") == Decimal(1) and col(rows[0], "value_usd") is None


def test_row_accessors_read_their_columns() -> None:
    from indexer.model import row_block_number, row_key, row_wallet_id

    rows = transfer_rows([transfer(C, A, 1, block=1234)], WALLETS, TOKENS, chain="polygon", head_number=2000,
                         final_number=90)
    assert row_block_number(rows[0]) == 1234 == col(rows[0], "block_number")
    assert row_wallet_id(rows[0]) == col(rows[0], "wallet_id") == WALLETS[A].id
    assert row_key(rows[0]) == (col(rows[0], "tx_hash"), col(rows[0], "log_index"), col(rows[0], "wallet_id"))
    assert (col(rows[0], "chain"), col(rows[0], "source")) == ("polygon", "indexer")
