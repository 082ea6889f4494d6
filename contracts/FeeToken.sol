// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @title FeeToken: an ERC20 that can charge a fee on every transfer, for the escrow's tests. NOT for any real chain.
/// @notice `setFee(bps, fromSender)`, anyone may call it, and mint:
///         - fromSender false (fee-on-transfer, deflationary): the sender loses `amount`, the recipient receives
///           `amount - fee`;
///         - fromSender true: the sender loses `amount + fee`, the recipient receives `amount`.
///         The fee is burnt (a Transfer to the zero address). 0 bps: a standard token.
contract FeeToken {
    uint8 public constant decimals = 18;
    uint256 public feeBps;
    bool public feeFromSender;

    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);

    function setFee(uint256 bps, bool fromSender) external {
        feeBps = bps;
        feeFromSender = fromSender;
    }

    function mint(address to, uint256 amount) external {
        balanceOf[to] += amount;
        emit Transfer(address(0), to, amount);
    }

    function approve(address spender, uint256 amount) external returns (bool) {
        allowance[msg.sender][spender] = amount;
        emit Approval(msg.sender, spender, amount);
        return true;
    }

    function transfer(address to, uint256 amount) external returns (bool) {
        _move(msg.sender, to, amount);
        return true;
    }

    function transferFrom(address from, address to, uint256 amount) external returns (bool) {
        allowance[from][msg.sender] -= amount; // checked: reverts past the allowance
        _move(from, to, amount);
        return true;
    }

    function _move(address from, address to, uint256 amount) private {
        uint256 fee = (amount * feeBps) / 10_000;
        uint256 debit = feeFromSender ? amount + fee : amount;
        uint256 credit = feeFromSender ? amount : amount - fee;
        balanceOf[from] -= debit; // checked: reverts on insufficient balance
        balanceOf[to] += credit;
        emit Transfer(from, to, credit);
        if (fee > 0) emit Transfer(from, address(0), fee);
    }
}
