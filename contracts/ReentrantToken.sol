// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @title ReentrantToken: an ERC20 that calls back into another contract in the middle of a transfer, for the
///        escrow's re-entrancy tests. NOT for any real chain.
/// @notice `arm(target, data)`: the next `transfer` or `transferFrom`, after moving the balances, calls `target`
///         with `data` once (it disarms first) and records the outcome in `Reentered(ok, result)` without
///         reverting, so a test sees both that the outer call went on and why the inner one failed.
///         `callOut(target, data)` makes the same call outside any transfer (the token acting as an account: a
///         lender, a signer), reverting with the callee's error if it fails.
///         Anyone may mint, arm and call out.
contract ReentrantToken {
    uint8 public constant decimals = 18;

    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;

    bool public armed;
    address private _target;
    bytes private _data;

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);
    event Reentered(bool ok, bytes result);

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

    function arm(address target, bytes calldata data) external {
        armed = true;
        _target = target;
        _data = data;
    }

    function callOut(address target, bytes calldata data) external returns (bytes memory) {
        (bool ok, bytes memory result) = target.call(data);
        if (!ok) {
            assembly {
                revert(add(result, 0x20), mload(result))
            }
        }
        return result;
    }

    function _move(address from, address to, uint256 amount) private {
        balanceOf[from] -= amount; // checked: reverts on insufficient balance
        balanceOf[to] += amount;
        emit Transfer(from, to, amount);
        if (armed) {
            armed = false;
            (bool ok, bytes memory result) = _target.call(_data);
            emit Reentered(ok, result);
        }
    }
}
