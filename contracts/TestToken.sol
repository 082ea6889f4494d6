// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @title TestToken: an ERC20 for the indexer's tests on anvil. NOT for any real chain.
/// @notice Decimals are chosen at deploy (18 like BSC's USDT, 6 like Polygon's). Anyone may mint.
/// @dev Overflow on purpose: `mint` and the credit side of a transfer use unchecked arithmetic so that a test can
///      give one address 2**256-1 tokens even when other balances exist (the "spam transfer of uint256 max" case).
///      Consequences, accepted for a test token: `totalSupply` wraps modulo 2**256, and crediting an address that
///      already holds tokens can wrap its balance. The debit side is checked: a transfer of more than the sender
///      holds reverts, as ERC20 expects.
contract TestToken {
    string public name;
    string public symbol;
    uint8 public immutable decimals;
    uint256 public totalSupply;

    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);

    error LengthMismatch(uint256 recipients, uint256 amounts);

    constructor(string memory name_, string memory symbol_, uint8 decimals_) {
        name = name_;
        symbol = symbol_;
        decimals = decimals_;
    }

    /// Open to anyone. Emits Transfer(0x0, to, amount) like a standard mint.
    function mint(address to, uint256 amount) external {
        unchecked {
            totalSupply += amount;
            balanceOf[to] += amount;
        }
        emit Transfer(address(0), to, amount);
    }

    function transfer(address to, uint256 amount) external returns (bool) {
        _move(msg.sender, to, amount);
        return true;
    }

    function approve(address spender, uint256 amount) external returns (bool) {
        allowance[msg.sender][spender] = amount;
        emit Approval(msg.sender, spender, amount);
        return true;
    }

    function transferFrom(address from, address to, uint256 amount) external returns (bool) {
        uint256 allowed = allowance[from][msg.sender];
        if (allowed != type(uint256).max) {
            allowance[from][msg.sender] = allowed - amount; // checked: reverts past the allowance
        }
        _move(from, to, amount);
        return true;
    }

    /// One Transfer(msg.sender, to[i], amounts[i]) per recipient, all in one transaction.
    function batchTransfer(address[] calldata to, uint256[] calldata amounts) external returns (bool) {
        if (to.length != amounts.length) revert LengthMismatch(to.length, amounts.length);
        for (uint256 i = 0; i < to.length; ++i) {
            _move(msg.sender, to[i], amounts[i]);
        }
        return true;
    }

    function _move(address from, address to, uint256 amount) internal {
        balanceOf[from] -= amount; // checked: reverts on insufficient balance
        unchecked {
            balanceOf[to] += amount;
        }
        emit Transfer(from, to, amount);
    }
}
