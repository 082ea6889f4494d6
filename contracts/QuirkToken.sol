// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @title QuirkToken: an ERC20 whose transfer and transferFrom answer the way real tokens do, for the escrow's tests.
///        NOT for any real chain.
/// @notice What `transfer` and `transferFrom` do and return is chosen for each of the two (`setQuirks`):
///         - Standard:       moves, returns true
///         - NoReturn:       moves, returns no data at all (USDT on Ethereum: declared without a return value)
///         - FalseOnSuccess: moves, returns false (USDT on Tron, from transfer)
///         - FalseNoMove:    moves nothing, returns false (how early ERC20 tokens refused instead of reverting)
///         - ShortReturn:    moves, returns the single byte 0x01, which is not an ABI-encoded bool
///         Anyone may mint and set the quirks.
contract QuirkToken {
    enum Quirk {
        Standard,
        NoReturn,
        FalseOnSuccess,
        FalseNoMove,
        ShortReturn
    }

    uint8 public constant decimals = 6;
    Quirk public transferQuirk;
    Quirk public transferFromQuirk;

    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);

    function setQuirks(Quirk forTransfer, Quirk forTransferFrom) external {
        transferQuirk = forTransfer;
        transferFromQuirk = forTransferFrom;
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
        return _answer(transferQuirk, msg.sender, to, amount);
    }

    function transferFrom(address from, address to, uint256 amount) external returns (bool) {
        Quirk quirk = transferFromQuirk;
        if (quirk != Quirk.FalseNoMove) allowance[from][msg.sender] -= amount; // checked: reverts past the allowance
        return _answer(quirk, from, to, amount);
    }

    function _answer(Quirk quirk, address from, address to, uint256 amount) private returns (bool) {
        if (quirk == Quirk.FalseNoMove) return false;
        balanceOf[from] -= amount; // checked: reverts on insufficient balance
        balanceOf[to] += amount;
        emit Transfer(from, to, amount);
        if (quirk == Quirk.NoReturn) {
            assembly {
                return(0, 0)
            }
        }
        if (quirk == Quirk.ShortReturn) {
            assembly {
                mstore(0, shl(248, 1))
                return(0, 1)
            }
        }
        return quirk == Quirk.Standard;
    }
}
