// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @title Reverter: failed transactions and internal native transfers, for the indexer's tests on anvil.
/// @notice A transaction calling `transferOrRevert` is mined with receipt status 0 (send it with an explicit gas
///         limit: gas estimation of a call that always reverts fails). `forward` moves msg.value to `to` inside the
///         call: an internal native transfer, visible only in traces (BSC) or in Polygon's LogTransfer.
contract Reverter {
    error AlwaysReverts(address to, uint256 amount);
    error ForwardFailed(address to, uint256 amount);

    /// Shaped like ERC20 transfer(address,uint256); always reverts.
    function transferOrRevert(address to, uint256 amount) external pure returns (bool) {
        revert AlwaysReverts(to, amount);
    }

    /// Forwards all of msg.value to `to`.
    function forward(address payable to) external payable {
        (bool ok, ) = to.call{value: msg.value}("");
        if (!ok) revert ForwardFailed(to, msg.value);
    }
}
