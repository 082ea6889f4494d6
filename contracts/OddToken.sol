// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @title OddToken: emits malformed ERC20 Transfer logs, for the indexer's bad-data tests. NOT a token.
/// @notice Every log below carries topic0 = keccak256("Transfer(address,address,uint256)")
///         (0xddf252ad...b3ef), the ERC20 Transfer topic, with a layout a standard decoder does not expect:
///         - emitUnindexed:   topics [sig]           data abi.encode(from, to, value)   (topics length 1)
///         - emitFromIndexed: topics [sig, from]     data abi.encode(to, value)         (topics length 2)
///         - emitBare:        topics [sig]           data empty                         (topics length 1, no data)
///         Solidity cannot declare two events with one signature in one contract, so the last two are raw LOGs.
contract OddToken {
    bytes32 public constant TRANSFER_TOPIC = keccak256("Transfer(address,address,uint256)");

    /// Same topic0 as ERC20 Transfer, but no parameter indexed.
    event Transfer(address from, address to, uint256 value);

    function emitUnindexed(address from, address to, uint256 value) external {
        emit Transfer(from, to, value);
    }

    function emitFromIndexed(address from, address to, uint256 value) external {
        bytes32 topic = TRANSFER_TOPIC;
        assembly {
            let ptr := mload(0x40)
            mstore(ptr, to)
            mstore(add(ptr, 0x20), value)
            log2(ptr, 0x40, topic, from)
        }
    }

    function emitBare() external {
        bytes32 topic = TRANSFER_TOPIC;
        assembly {
            log1(0, 0, topic)
        }
    }
}
