"""The Tron simulator speaks java-tron's HTTP wire format, quirks included: checked over real HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio

from chains.tron.address import to_base58, to_hex20, to_hex41, to_word
from citadel_devtools.tron_simulator import (
    LACK_OF_RESOURCES,
    TRANSFER_TOPIC,
    ForkBelowSolidified,
    TronSimulator,
    TrxTransfer,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(http: aiohttp.ClientSession, sim: TronSimulator, path: str, body: Any = None) -> Any:
    async with http.post(sim.url + path, json=body if body is not None else {}) as resp:
        assert resp.status == 200, await resp.text()
        return orjson.loads(await resp.read())


async def test_blocks_ids_and_links(tron_sim: TronSimulator, http: aiohttp.ClientSession) -> None:
    head = await post(http, tron_sim, "/wallet/getnowblock")
    raw = head["block_header"]["raw_data"]
    assert raw["number"] == tron_sim.head_number == 40
    assert int(head["blockID"][:16], 16) == 40 and len(head["blockID"]) == 64
    assert "transactions" not in head  # proto3: empty repeated field omitted
    assert raw["witness_address"].startswith("41")
    parent = await post(http, tron_sim, "/wallet/getblockbynum", {"num": 39})
    assert raw["parentHash"] == parent["blockID"]
    assert raw["timestamp"] - parent["block_header"]["raw_data"]["timestamp"] == 3000
    genesis = await post(http, tron_sim, "/wallet/getblockbynum", {"num": 0})
    assert "number" not in genesis["block_header"]["raw_data"]  # proto3: 0 omitted
    assert await post(http, tron_sim, "/wallet/getblockbynum", {"num": 41}) == {}
    async with http.get(tron_sim.url + "/wallet/getblockbynum", params={"num": "39"}) as resp:
        assert orjson.loads(await resp.read())["blockID"] == parent["blockID"]
    by_id = await post(http, tron_sim, "/wallet/getblock", {"id_or_num": parent["blockID"], "detail": True})
    assert by_id["blockID"] == parent["blockID"]
    by_num = await post(http, tron_sim, "/wallet/getblock", {"id_or_num": "39"})
    assert by_num["blockID"] == parent["blockID"]


async def test_getblockbylimitnext_contract(tron_sim: TronSimulator, http: aiohttp.ClientSession) -> None:
    tron_sim.produce_blocks(110)
    got = await post(http, tron_sim, "/wallet/getblockbylimitnext", {"startNum": 5, "endNum": 105})
    numbers = [b["block_header"]["raw_data"]["number"] for b in got["block"]]
    assert numbers == list(range(5, 105))  # [start, end)
    for prev, cur in zip(got["block"], got["block"][1:], strict=False):
        assert cur["block_header"]["raw_data"]["parentHash"] == prev["blockID"]
    assert await post(http, tron_sim, "/wallet/getblockbylimitnext", {"startNum": 5, "endNum": 106}) == {}
    assert await post(http, tron_sim, "/wallet/getblockbylimitnext", {"startNum": 5, "endNum": 5}) == {}
    tail = await post(http, tron_sim, "/wallet/getblockbylimitnext", {"startNum": 140, "endNum": 200})
    assert [b["block_header"]["raw_data"]["number"] for b in tail["block"]] == [
        140,
        141,
        142,
        143,
        144,
        145,
        146,
        147,
        148,
        149,
        150,
    ]
    assert await post(http, tron_sim, "/wallet/getblockbylimitnext", {"startNum": 151, "endNum": 160}) == {}


async def test_transaction_shapes(tron_sim: TronSimulator, http: aiohttp.ClientSession) -> None:
    alice, bob = tron_sim.new_address(), tron_sim.new_address()
    tron_sim.fund(alice, 10_000_000)
    usdt = tron_sim.deploy_trc20("USDT", 6)
    tron_sim.mint(usdt, alice, 1_000)
    trx_id = tron_sim.transfer_trx(alice, bob, 1_500)
    ok_id = tron_sim.transfer_trc20(usdt, alice, bob, 400)
    bad_id = tron_sim.transfer_trc20(usdt, alice, bob, 300, revert=True)
    broke_id = tron_sim.transfer_trc20(usdt, alice, bob, 10_000)  # more than alice has: the contract reverts
    block = tron_sim.produce_block()

    got = await post(http, tron_sim, "/wallet/getblockbynum", {"num": block.number})
    txs = got["transactions"]
    assert [t["txID"] for t in txs] == [trx_id, ok_id, bad_id, broke_id]
    assert [t["ret"][0]["contractRet"] for t in txs] == ["SUCCESS", "SUCCESS", "REVERT", "REVERT"]
    trx = txs[0]["raw_data"]["contract"][0]
    assert trx["type"] == "TransferContract"
    assert trx["parameter"]["value"] == {
        "amount": 1_500,
        "owner_address": to_hex41(alice),
        "to_address": to_hex41(bob),
    }
    call = txs[1]["raw_data"]["contract"][0]
    assert call["type"] == "TriggerSmartContract"
    assert call["parameter"]["value"]["contract_address"] == to_hex41(usdt)
    assert call["parameter"]["value"]["data"] == "a9059cbb" + to_word(bob) + f"{400:064x}"

    infos = await post(http, tron_sim, "/wallet/gettransactioninfobyblocknum", {"num": block.number})
    assert isinstance(infos, list) and len(infos) == 4
    trx_info, ok_info, bad_info, broke_info = infos
    assert set(trx_info) == {"id", "blockNumber", "blockTimeStamp", "receipt"}
    assert trx_info["receipt"] == {"net_usage": 268}
    assert ok_info["receipt"]["result"] == "SUCCESS"
    assert ok_info["contractResult"] == ["0" * 64]  # USDT quirk: zeros even on success
    assert ok_info["contract_address"] == to_hex41(usdt)
    assert ok_info["fee"] == ok_info["receipt"]["energy_usage_total"] * 100
    (entry,) = ok_info["log"]
    assert entry == {
        "address": to_hex20(usdt),
        "topics": [TRANSFER_TOPIC, to_word(alice), to_word(bob)],
        "data": f"{400:064x}",
    }
    for failed in (bad_info, broke_info):
        assert failed["receipt"]["result"] == "REVERT" and failed["result"] == "FAILED"
        assert "log" not in failed
    assert tron_sim.token_balance(usdt, alice) == 600 and tron_sim.token_balance(usdt, bob) == 400
    assert tron_sim.trx_balance(bob) == 1_500

    empty = tron_sim.produce_block()
    assert await post(http, tron_sim, "/wallet/gettransactioninfobyblocknum", {"num": empty.number}) == []
    one = await post(http, tron_sim, "/wallet/gettransactioninfobyid", {"value": ok_id})
    assert one == ok_info
    assert await post(http, tron_sim, "/wallet/gettransactioninfobyid", {"value": "ab" * 32}) == {}


async def test_visible_switches_address_form(tron_sim: TronSimulator, http: aiohttp.ClientSession) -> None:
    alice, bob = tron_sim.new_address(), tron_sim.new_address()
    tron_sim.fund(alice, 5_000)
    tron_sim.transfer_trx(alice, bob, 5)
    block = tron_sim.produce_block()
    got = await post(http, tron_sim, "/wallet/getblockbynum", {"num": block.number, "visible": True})
    value = got["transactions"][0]["raw_data"]["contract"][0]["parameter"]["value"]
    assert value["owner_address"] == alice and value["to_address"] == bob
    assert got["block_header"]["raw_data"]["witness_address"].startswith("T")
    account = await post(http, tron_sim, "/wallet/getaccount", {"address": bob, "visible": True})
    assert account["address"] == bob and account["balance"] == 5
    # base58 without visible=true is not hex: java-tron's decoder error, as HTTP 200
    err = await post(http, tron_sim, "/wallet/getaccount", {"address": bob})
    assert err["Error"].startswith("class org.bouncycastle.util.encoders.DecoderException : ")


async def test_accounts_proto3(tron_sim: TronSimulator, http: aiohttp.ClientSession) -> None:
    alice, bob = tron_sim.new_address(), tron_sim.new_address()
    assert await post(http, tron_sim, "/wallet/getaccount", {"address": to_hex41(alice)}) == {}
    tron_sim.fund(alice, 100)
    tron_sim.transfer_trx(alice, bob, 100)
    tron_sim.produce_block()
    account = await post(http, tron_sim, "/wallet/getaccount", {"address": to_hex41(alice)})
    assert account["address"] == to_hex41(alice)
    assert "balance" not in account and "create_time" in account  # zero balance omitted
    with pytest.raises(ValueError, match="not sufficient"):
        tron_sim.transfer_trx(alice, bob, 1)


async def test_trigger_constant_contract(tron_sim: TronSimulator, http: aiohttp.ClientSession) -> None:
    alice = tron_sim.new_address()
    usdt = tron_sim.deploy_trc20("USDT", 6)
    tron_sim.mint(usdt, alice, 123_456)

    async def call(selector: str, parameter: str = "") -> Any:
        body = {
            "owner_address": to_hex41(alice),
            "contract_address": to_hex41(usdt),
            "function_selector": selector,
            "parameter": parameter,
        }
        return await post(http, tron_sim, "/wallet/triggerconstantcontract", body)

    got = await call("balanceOf(address)", to_word(alice))
    assert got["result"] == {"result": True}
    assert int(got["constant_result"][0], 16) == 123_456
    assert int((await call("decimals()"))["constant_result"][0], 16) == 6
    symbol = bytes.fromhex((await call("symbol()"))["constant_result"][0])
    assert int.from_bytes(symbol[32:64], "big") == 4 and symbol[64:68] == b"USDT"
    by_data = await post(
        http,
        tron_sim,
        "/wallet/triggerconstantcontract",
        {"contract_address": to_hex41(usdt), "data": "70a08231" + to_word(alice)},
    )
    assert int(by_data["constant_result"][0], 16) == 123_456
    missing = await post(
        http,
        tron_sim,
        "/wallet/triggerconstantcontract",
        {"contract_address": to_hex41(alice), "function_selector": "decimals()"},
    )
    assert missing["result"]["code"] == "CONTRACT_VALIDATE_ERROR"


async def test_node_info_and_solidity(tron_sim: TronSimulator, http: aiohttp.ClientSession) -> None:
    info = await post(http, tron_sim, "/wallet/getnodeinfo")
    head, solid = tron_sim.head_number, tron_sim.solid_number
    assert solid == head - 18
    assert info["block"] == f"Num:{head},ID:{tron_sim.block(head).block_id}"
    assert info["solidityBlock"] == f"Num:{solid},ID:{tron_sim.block(solid).block_id}"
    async with http.get(tron_sim.url + "/wallet/getnodeinfo") as resp:
        assert resp.status == 200
    solid_now = await post(http, tron_sim, "/walletsolidity/getnowblock")
    assert solid_now["block_header"]["raw_data"]["number"] == solid
    assert await post(http, tron_sim, "/walletsolidity/getblockbynum", {"num": solid + 1}) == {}
    assert (
        await post(http, tron_sim, "/walletsolidity/gettransactioninfobyblocknum", {"num": solid + 1}) == []
    )


async def test_fork_replaces_blocks_and_undoes_state(
    tron_sim: TronSimulator, http: aiohttp.ClientSession
) -> None:
    alice, bob, carol = tron_sim.new_address(), tron_sim.new_address(), tron_sim.new_address()
    tron_sim.fund(alice, 1_000)
    tron_sim.transfer_trx(alice, bob, 300)
    tron_sim.produce_blocks(3)
    old = [tron_sim.block(n).block_id for n in range(38, 44)]
    new_blocks = tron_sim.fork(3, replacement_txs=[TrxTransfer(alice, carol, 50)], new_blocks=4)
    assert [b.number for b in new_blocks] == [41, 42, 43, 44]
    assert tron_sim.trx_balance(bob) == 0 and tron_sim.trx_balance(carol) == 50
    assert tron_sim.block(40).block_id == old[2]
    assert all(tron_sim.block(n).block_id != old[n - 38] for n in (41, 42, 43))
    b41 = await post(http, tron_sim, "/wallet/getblockbynum", {"num": 41})
    assert b41["block_header"]["raw_data"]["parentHash"] == old[2]
    assert b41["transactions"][0]["raw_data"]["contract"][0]["parameter"]["value"]["to_address"] == to_hex41(
        carol
    )
    with pytest.raises(ForkBelowSolidified):
        tron_sim.fork(19)
    tron_sim.fork(19, force=True)
    assert tron_sim.head_number == 44


async def test_error_bodies_and_http_faults(tron_sim: TronSimulator, http: aiohttp.ClientSession) -> None:
    err = await post(http, tron_sim, "/wallet/getblockbynum", {"num": "abc"})
    assert err == {"Error": 'class java.lang.NumberFormatException : For input string: "abc"'}
    async with http.post(tron_sim.url + "/wallet/getnowblock", data=b"{not json") as resp:
        assert resp.status == 200 and "Error" in orjson.loads(await resp.read())
    async with http.post(tron_sim.url + "/wallet/nosuchthing", json={}) as resp:
        assert resp.status == 404

    tron_sim.faults.add("lack_of_resources", count=2, paths=["/wallet/getnowblock"])
    for _ in range(2):
        assert await post(http, tron_sim, "/wallet/getnowblock") == {"Error": LACK_OF_RESOURCES}
    assert "blockID" in await post(http, tron_sim, "/wallet/getnowblock")

    tron_sim.faults.add("http_403", count=1)
    tron_sim.faults.add("http_429", count=1)
    tron_sim.faults.add("http_503", count=1)
    tron_sim.faults.add("http_500", count=1)
    statuses = []
    for _ in range(4):
        async with http.post(tron_sim.url + "/wallet/getnowblock", json={}) as resp:
            statuses.append(resp.status)
            body = await resp.text()
            if resp.status == 403:
                assert "frequency limit" in orjson.loads(body)["Error"]
            if resp.status == 429:
                assert resp.headers["Retry-After"] == "1"
    assert statuses == [403, 429, 503, 500]
    tron_sim.faults.add("truncated", count=1)
    async with http.post(tron_sim.url + "/wallet/getnowblock", json={}) as resp:
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(await resp.read())
    tron_sim.faults.add("slow", count=1, delay_s=0.3)
    started = time.monotonic()
    await post(http, tron_sim, "/wallet/getnowblock")
    assert time.monotonic() - started >= 0.3
    tron_sim.faults.clear()
    tron_sim.faults.add("http_429", probability=1.0)
    async with http.post(tron_sim.url + "/wallet/getnowblock", json={}) as resp:
        assert resp.status == 429
    assert tron_sim.faults.injected["http_429"] == 2


async def test_api_key_mode_records_headers(http: aiohttp.ClientSession) -> None:
    async with TronSimulator(api_key="k-123456") as sim:
        async with http.post(sim.url + "/wallet/getnowblock", json={}) as resp:
            assert resp.status == 401
        async with http.post(
            sim.url + "/wallet/getnowblock", json={}, headers={"TRON-PRO-API-KEY": "k-123456"}
        ) as resp:
            assert resp.status == 200
        assert [r.api_key for r in sim.requests] == [None, "k-123456"]


async def test_timer_mode_and_admin_api(http: aiohttp.ClientSession) -> None:
    async with TronSimulator(initial_blocks=1, block_time_s=0.05) as sim:
        await asyncio.sleep(0.3)
        assert sim.head_number >= 3
        async with http.post(sim.url + "/_sim/deploy_trc20", json={"symbol": "USDC", "decimals": 6}) as resp:
            token = (await resp.json())["result"]
        assert to_base58(token) == token and sim.tokens[token].symbol == "USDC"
        async with http.get(sim.url + "/_sim/state") as resp:
            assert (await resp.json())["result"]["tokens"][token]["decimals"] == 6


async def test_calldata_with_41_in_padding(tron_sim: TronSimulator) -> None:
    from citadel_devtools.tron_simulator import Trc20Transfer

    alice, bob = tron_sim.new_address(), tron_sim.new_address()
    usdt = tron_sim.deploy_trc20("USDT", 6)
    tron_sim.mint(usdt, alice, 10)
    tron_sim.submit(Trc20Transfer(usdt, alice, bob, 1, pad_with_41=True))
    block = tron_sim.produce_block()
    data = block.txs[0].tx["raw_data"]["contract"][0]["parameter"]["value"]["data"]
    assert data[8:72] == "0" * 22 + to_hex41(bob)


async def test_getblockbyid(tron_sim: TronSimulator, http: aiohttp.ClientSession) -> None:
    alice, bob = tron_sim.new_address(), tron_sim.new_address()
    tron_sim.fund(alice, 100)
    tx = tron_sim.transfer_trx(alice, bob, 100)
    block = tron_sim.produce_block()
    got = await post(http, tron_sim, "/wallet/getblockbyid", {"value": block.block_id})
    assert got == await post(http, tron_sim, "/wallet/getblockbynum", {"num": block.number})
    assert [t["txID"] for t in got["transactions"]] == [tx]  # the whole block, transactions included
    assert await post(http, tron_sim, "/wallet/getblockbyid", {"value": "00" * 32}) == {}
    orphaned = block.block_id
    tron_sim.fork(1)
    assert await post(http, tron_sim, "/wallet/getblockbyid", {"value": orphaned}) == {}
    err = await post(http, tron_sim, "/wallet/getblockbyid", {"value": "zz"})
    assert err["Error"].startswith("class org.bouncycastle.util.encoders.DecoderException : ")


async def test_a_lagging_node_answers_as_the_chain_was_blocks_ago(
    tron_sim: TronSimulator, http: aiohttp.ClientSession
) -> None:
    alice, bob = tron_sim.new_address(), tron_sim.new_address()
    tron_sim.fund(alice, 100)
    tx = tron_sim.transfer_trx(alice, bob, 100)
    top = tron_sim.produce_block()
    tron_sim.faults.lag(1.0, blocks=3)
    head = await post(http, tron_sim, "/wallet/getnowblock")
    assert head["block_header"]["raw_data"]["number"] == top.number - 3
    info = await post(http, tron_sim, "/wallet/getnodeinfo")
    assert info["block"].startswith(f"Num:{top.number - 3},") and info["solidityBlock"].startswith(
        f"Num:{top.number - 21},")
    short = await post(http, tron_sim, "/wallet/getblockbylimitnext",
                       {"startNum": top.number - 4, "endNum": top.number + 1})
    assert [b["block_header"]["raw_data"]["number"] for b in short["block"]] == [top.number - 4, top.number - 3]
    assert await post(http, tron_sim, "/wallet/getblockbylimitnext",
                      {"startNum": top.number - 1, "endNum": top.number + 1}) == {}
    assert await post(http, tron_sim, "/wallet/gettransactioninfobyblocknum", {"num": top.number}) == []
    assert await post(http, tron_sim, "/wallet/getblockbynum", {"num": top.number}) == {}
    assert await post(http, tron_sim, "/wallet/getblock", {"id_or_num": str(top.number)}) == {}
    assert await post(http, tron_sim, "/wallet/getblockbyid", {"value": top.block_id}) == {}
    assert await post(http, tron_sim, "/wallet/gettransactioninfobyid", {"value": tx}) == {}
    assert tron_sim.faults.injected["lagging"] == 9 and tron_sim.faults.injected["lag_hidden"] == 9

    # after a fork, a node behind may still be on the old branch
    tron_sim.produce_blocks(3)
    old = tron_sim.block(top.number)
    tron_sim.fork(4, new_blocks=2)  # replaces the top block and the three above it
    still_old = await post(http, tron_sim, "/wallet/getblockbynum", {"num": top.number})
    assert still_old["blockID"] == old.block_id != tron_sim.block(top.number).block_id
    tron_sim.faults.clear()
    assert (await post(http, tron_sim, "/wallet/getnowblock"))["blockID"] == tron_sim.block(top.number + 1).block_id


async def test_lagging_is_drawn_per_request(tron_sim: TronSimulator, http: aiohttp.ClientSession) -> None:
    tron_sim.faults.lag(0.3, blocks=2)
    numbers = [(await post(http, tron_sim, "/wallet/getnowblock"))["block_header"]["raw_data"]["number"]
               for _ in range(60)]
    assert set(numbers) == {38, 40}
    assert 5 <= numbers.count(38) == tron_sim.faults.injected["lagging"] <= 35
