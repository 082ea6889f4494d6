// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @title CitadelEscrow: holds the principal of Citadel P2P agreements on BSC, Polygon and Tron.
/// @author Citadel
/// @notice One contract per chain. An agreement (`agreementId` = `p2p_agreements.id`) goes through three steps:
///
///   1. `authorizeLock` (a signer): the platform fixes the agreement's terms on chain: lender, borrower, token and
///      amount. Without this step anyone could lock an agreement id first, with parties and a token of their
///      choosing, and since an id is locked only once the real lender could never lock it (ids are sequential, so
///      the platform's future ids could all be taken in advance). Terms can be replaced or revoked until the lock.
///   2. `lock` (the lender, `msg.sender`): pulls exactly the authorised amount of the token from the lender into the
///      escrow and emits `Locked`. An agreement id is locked once, ever.
///   3. `release` (a signer), any number of times: sends part or all of what the agreement still holds to its
///      lender or its borrower, and emits `Released`. Disbursing the principal to the borrower and returning it to
///      the lender are both releases; partial releases are allowed. Nothing else can move an agreement's funds.
///
/// What a reader of the events can rely on (the indexer reads nothing else):
///   - `Locked(agreementId, lender, borrower, token, amount)` is emitted at most once per `agreementId` by a given
///     deployment, and only after the escrow's balance of `token` rose by exactly `amount` in that call: `amount`
///     is what the escrow really holds for the agreement, never zero. `lender` is the account that paid;
///     `lender != borrower`, neither is the zero address nor the escrow, `token` is a contract.
///   - `Released(agreementId, to, token, amount)` is emitted only for an agreement locked earlier (in an earlier
///     transaction, or earlier in the same one), with `to` equal to that `Locked`'s lender or borrower, `token`
///     equal to its token, `amount > 0`, and only after the escrow's balance of `token` fell by exactly `amount`.
///     The `Released` amounts of an agreement never add up to more than its `Locked` amount; what remains is
///     `getAgreement(id).lockedAmount - releasedAmount`. A release to the lender does not close the agreement: more
///     releases may follow while something remains. The contract does not tell a repayment from a refund: both are
///     a `Released` to the lender.
///   - No other event of this contract has the topic0 of `Locked` or `Released`; admin events are separate.
///
/// Tokens:
///   - Tokens whose `transfer`/`transferFrom` return nothing (USDT on Ethereum) work: a call succeeds when it does
///     not revert and returns either no data or a first word equal to 1 (`true`). Anything else reverts
///     (`TokenCallFailed`), and so does a token address without code (`NotAContract`).
///   - USDT on Tron (TRC20 `TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t`) returns `false` from a `transfer` that succeeded.
///     The owner lists such tokens with `setFalseReturnAccepted`: for them a `false` answer (from `transfer` or
///     `transferFrom`) is accepted too. This relaxes nothing else: every token move, for every token, is checked
///     against the escrow's own balance, so a `false` that moved nothing still reverts (`BalanceMismatch`).
///   - Fee-on-transfer and deflationary tokens are refused: `lock` reverts unless the escrow's balance rose by
///     exactly `amount`. If a token starts charging a fee later (USDT's contract has a fee its owner can switch
///     on), a release still succeeds when the escrow's balance falls by exactly `amount`: `Released.amount` is what
///     left the escrow, the recipient gets what the token delivers. A token that takes more than `amount` from the
///     escrow is refused (`BalanceMismatch`), since the difference would be other agreements' money.
///   - Rebasing tokens (balances that change without transfers) are not supported.
///   - The native coin (BNB, POL, TRX) is never accepted: no function is payable and there is no receive or
///     fallback function. Coin forced in (a self-destruct, a block reward) is not accounted for and cannot leave.
///
/// Authority:
///   - The owner (two-step transfer: `transferOwnership`, then `acceptOwnership` by the new owner) manages the
///     signers, the false-return list, and may send out a token's surplus: what the escrow holds beyond the sum of
///     its agreements' remaining amounts (tokens sent to the contract directly by mistake). The owner can never
///     move agreement funds. There is no renounce: a contract without an owner could never change its signers.
///   - A signer authorises locks and releases funds, but only to an agreement's own lender or borrower and never
///     more than it holds: a stolen signer key can pay an agreement out early to one of its parties, not to a
///     stranger. Remove it with `removeSigner`.
///   - Every function that moves tokens (`lock`, `release`, `recoverSurplus`) is `nonReentrant` and follows
///     checks-effects-interactions: the agreement's accounting is updated before the token is called.
///
/// Tron (TVM runs this Solidity 0.8 source):
///   - Compile for Tron with TRON's Solidity compiler (tron-solc, the 0.8 line) and an EVM version no newer than
///     paris, as this repository's build does (no PUSH0). The contract uses no `block.difficulty`/`prevrandao`,
///     `block.basefee`, `block.gaslimit`, `block.chainid`, `selfbalance`, timestamps, CREATE2 or transient
///     storage: their TVM meanings differ or are missing.
///   - Addresses are 20 bytes inside the VM and in the events' topics and data; the 0x41 prefix and base58 (`T...`)
///     belong to Tron's address encoding outside the VM. Constructor arguments and calls take the 20-byte form
///     (TronWeb converts base58 for you).
///   - After deploying on Tron, list USDT with `setFalseReturnAccepted(USDT, true)` before its first release.
///   - Callers pay energy: give `lock` and `release` a fee limit with a margin (a TRC20 transfer to an account that
///     never held the token costs more energy), or set the contract's consume_user_resource_percent at deployment
///     so the deployer pays a share.
contract CitadelEscrow {
    /// @notice Where an agreement id stands. `Locked` is final: a locked id stays locked, even when fully released.
    enum Status {
        None,
        Authorized,
        Locked
    }

    struct Agreement {
        address lender;
        Status status; // packed with `lender` in one slot
        address borrower;
        address token;
        uint256 amount; // the authorised amount; once locked, the amount locked
        uint256 released; // sum of the releases so far (only once locked)
    }

    /// @notice `p2p_agreements.id` is a PostgreSQL BIGINT: ids run from 1 to 2**63 - 1.
    uint256 public constant MAX_AGREEMENT_ID = 2 ** 63 - 1;

    uint256 private constant NOT_ENTERED = 1;
    uint256 private constant ENTERED = 2;

    /// @notice The account that manages signers; changes only through `transferOwnership` + `acceptOwnership`.
    address public owner;
    /// @notice The account `transferOwnership` named, until it accepts (zero: none).
    address public pendingOwner;
    /// @notice Accounts allowed to authorise locks and to release funds.
    mapping(address => bool) public isSigner;
    /// @notice How many accounts are signers.
    uint256 public signerCount;
    /// @notice Tokens whose `transfer`/`transferFrom` may answer `false` on success (USDT on Tron).
    mapping(address => bool) public falseReturnAccepted;
    /// @notice Per token, what the escrow holds for agreements: the sum of their locked minus released amounts.
    mapping(address => uint256) public held;

    mapping(uint256 => Agreement) private _agreements;
    uint256 private _entered = NOT_ENTERED;

    // --- events the indexer reads: signatures and indexing are a published interface, never change them ---

    /// @notice `lender` paid `amount` of `token` into the escrow for agreement `agreementId`, lent to `borrower`.
    event Locked(
        uint256 indexed agreementId, address indexed lender, address indexed borrower, address token, uint256 amount
    );
    /// @notice `amount` of `token` left the escrow for `to`, the lender or the borrower of `agreementId`.
    event Released(uint256 indexed agreementId, address indexed to, address token, uint256 amount);

    // --- other events ---

    /// @notice `signer` fixed the terms `lock` will accept for `agreementId` (replacing earlier ones, if any).
    event LockAuthorized(
        uint256 indexed agreementId,
        address indexed lender,
        address indexed borrower,
        address token,
        uint256 amount,
        address signer
    );
    /// @notice `signer` withdrew the terms of `agreementId` before it was locked.
    event LockAuthorizationRevoked(uint256 indexed agreementId, address indexed signer);
    /// @notice The owner sent out `amount` of `token` that no agreement held.
    event SurplusRecovered(address indexed token, address indexed to, uint256 amount);
    event OwnershipTransferStarted(address indexed previousOwner, address indexed newOwner);
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);
    event SignerAdded(address indexed signer);
    event SignerRemoved(address indexed signer);
    event FalseReturnAcceptedSet(address indexed token, bool accepted);

    // --- errors ---

    error NotOwner(address caller);
    error NotPendingOwner(address caller);
    error NotSigner(address caller);
    error ZeroAddress();
    error AlreadySigner(address signer);
    error UnknownSigner(address signer);
    error InvalidAgreementId(uint256 agreementId);
    error ZeroAmount();
    error SameParty(address party);
    error EscrowAsParty();
    error AlreadyLocked(uint256 agreementId);
    error LockNotAuthorized(uint256 agreementId);
    error NotLender(uint256 agreementId, address caller);
    error TermsMismatch(uint256 agreementId);
    error NotLocked(uint256 agreementId);
    error NotAParty(uint256 agreementId, address to);
    error ExceedsRemaining(uint256 agreementId, uint256 amount, uint256 remaining);
    error NotAContract(address token);
    error TokenCallFailed(address token);
    error BalanceMismatch(address token, uint256 expected, uint256 actual);
    error NoSurplus(address token);
    error Reentrancy();

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        _;
    }

    modifier onlySigner() {
        if (!isSigner[msg.sender]) revert NotSigner(msg.sender);
        _;
    }

    /// @dev A storage flag, not transient storage: TVM and the paris EVM version have no TSTORE.
    modifier nonReentrant() {
        if (_entered == ENTERED) revert Reentrancy();
        _entered = ENTERED;
        _;
        _entered = NOT_ENTERED;
    }

    /// @param initialOwner the owner (a multisig in production); emits `OwnershipTransferred(0, initialOwner)`.
    /// @param initialSigner the first signer; emits `SignerAdded`.
    constructor(address initialOwner, address initialSigner) {
        if (initialOwner == address(0) || initialSigner == address(0)) revert ZeroAddress();
        owner = initialOwner;
        emit OwnershipTransferred(address(0), initialOwner);
        isSigner[initialSigner] = true;
        signerCount = 1;
        emit SignerAdded(initialSigner);
    }

    // --- agreements ---------------------------------------------------------------------------------------------

    /// @notice Fix the terms `lock` will accept for `agreementId`. Replaces earlier terms while it is not locked.
    /// @dev Reverts: `NotSigner`, `InvalidAgreementId` (0 or above `MAX_AGREEMENT_ID`), `AlreadyLocked`,
    ///      `ZeroAddress`, `SameParty` (lender == borrower), `EscrowAsParty`, `ZeroAmount`, `NotAContract`.
    function authorizeLock(uint256 agreementId, address lender, address borrower, address token, uint256 amount)
        external
        onlySigner
    {
        if (agreementId == 0 || agreementId > MAX_AGREEMENT_ID) revert InvalidAgreementId(agreementId);
        Agreement storage a = _agreements[agreementId];
        if (a.status == Status.Locked) revert AlreadyLocked(agreementId);
        if (lender == address(0) || borrower == address(0) || token == address(0)) revert ZeroAddress();
        if (lender == borrower) revert SameParty(lender);
        if (lender == address(this) || borrower == address(this)) revert EscrowAsParty();
        if (amount == 0) revert ZeroAmount();
        if (token.code.length == 0) revert NotAContract(token);
        a.lender = lender;
        a.status = Status.Authorized;
        a.borrower = borrower;
        a.token = token;
        a.amount = amount;
        emit LockAuthorized(agreementId, lender, borrower, token, amount, msg.sender);
    }

    /// @notice Withdraw the terms of an agreement that is not locked (the agreement was cancelled before funding).
    /// @dev Reverts: `NotSigner`, `AlreadyLocked`, `LockNotAuthorized`.
    function revokeLockAuthorization(uint256 agreementId) external onlySigner {
        Status status = _agreements[agreementId].status;
        if (status == Status.Locked) revert AlreadyLocked(agreementId);
        if (status != Status.Authorized) revert LockNotAuthorized(agreementId);
        delete _agreements[agreementId];
        emit LockAuthorizationRevoked(agreementId, msg.sender);
    }

    /// @notice The lender locks the agreement's principal: `amount` of `token` is pulled from `msg.sender` (approve
    ///         the escrow first) and `Locked` is emitted. The arguments must equal the authorised terms, so the
    ///         lender signs exactly what it pays and for whom.
    /// @dev Reverts: `Reentrancy`, `AlreadyLocked`, `LockNotAuthorized`, `NotLender`, `TermsMismatch`,
    ///      `NotAContract`, `TokenCallFailed` (the token refused: allowance, balance, blacklist...),
    ///      `BalanceMismatch` (a fee-on-transfer or deflationary token).
    function lock(uint256 agreementId, address borrower, address token, uint256 amount) external nonReentrant {
        Agreement storage a = _agreements[agreementId];
        if (a.status == Status.Locked) revert AlreadyLocked(agreementId);
        if (a.status != Status.Authorized) revert LockNotAuthorized(agreementId);
        if (msg.sender != a.lender) revert NotLender(agreementId, msg.sender);
        if (borrower != a.borrower || token != a.token || amount != a.amount) revert TermsMismatch(agreementId);

        a.status = Status.Locked;
        held[token] += amount;

        uint256 before = _balanceOf(token);
        _callToken(token, abi.encodeCall(IERC20Like.transferFrom, (msg.sender, address(this), amount)));
        uint256 received = _balanceOf(token);
        received = received >= before ? received - before : 0;
        if (received != amount) revert BalanceMismatch(token, amount, received);

        emit Locked(agreementId, msg.sender, borrower, token, amount);
    }

    /// @notice Send `amount` of what agreement `agreementId` holds to `to`, its lender or its borrower.
    /// @dev Reverts: `Reentrancy`, `NotSigner`, `ZeroAmount`, `NotLocked`, `NotAParty`, `ExceedsRemaining`,
    ///      `TokenCallFailed`, `BalanceMismatch` (the escrow's balance did not fall by exactly `amount`).
    function release(uint256 agreementId, address to, uint256 amount) external nonReentrant onlySigner {
        if (amount == 0) revert ZeroAmount();
        Agreement storage a = _agreements[agreementId];
        if (a.status != Status.Locked) revert NotLocked(agreementId);
        if (to != a.lender && to != a.borrower) revert NotAParty(agreementId, to);
        uint256 remaining = a.amount - a.released;
        if (amount > remaining) revert ExceedsRemaining(agreementId, amount, remaining);

        address token = a.token;
        a.released += amount;
        held[token] -= amount;

        _pay(token, to, amount);

        emit Released(agreementId, to, token, amount);
    }

    /// @notice An agreement's state: zeros unless it is locked. `lockedAmount - releasedAmount` is what it holds.
    function getAgreement(uint256 agreementId)
        external
        view
        returns (address lender, address borrower, address token, uint256 lockedAmount, uint256 releasedAmount)
    {
        Agreement storage a = _agreements[agreementId];
        if (a.status != Status.Locked) return (address(0), address(0), address(0), 0, 0);
        return (a.lender, a.borrower, a.token, a.amount, a.released);
    }

    /// @notice Where an agreement id stands: `None`, `Authorized` (terms fixed, not locked) or `Locked`.
    function statusOf(uint256 agreementId) external view returns (Status) {
        return _agreements[agreementId].status;
    }

    /// @notice The terms `lock` will accept for `agreementId`: zeros unless its status is `Authorized`.
    function lockAuthorization(uint256 agreementId)
        external
        view
        returns (address lender, address borrower, address token, uint256 amount)
    {
        Agreement storage a = _agreements[agreementId];
        if (a.status != Status.Authorized) return (address(0), address(0), address(0), 0);
        return (a.lender, a.borrower, a.token, a.amount);
    }

    // --- owner -------------------------------------------------------------------------------------------------

    /// @notice Send out what the escrow holds of `token` beyond what its agreements hold (tokens sent to it
    ///         directly). Agreement funds cannot leave this way.
    /// @dev Reverts: `Reentrancy`, `NotOwner`, `ZeroAddress`, `NoSurplus`, `TokenCallFailed`, `BalanceMismatch`.
    function recoverSurplus(address token, address to) external nonReentrant onlyOwner {
        if (to == address(0)) revert ZeroAddress();
        uint256 balance = _balanceOf(token);
        uint256 reserved = held[token];
        if (balance <= reserved) revert NoSurplus(token);
        uint256 amount = balance - reserved;
        _pay(token, to, amount);
        emit SurplusRecovered(token, to, amount);
    }

    /// @notice Name the next owner; it takes over when it calls `acceptOwnership`. `address(0)` cancels.
    function transferOwnership(address newOwner) external onlyOwner {
        pendingOwner = newOwner;
        emit OwnershipTransferStarted(owner, newOwner);
    }

    /// @notice The pending owner takes over.
    function acceptOwnership() external {
        if (msg.sender != pendingOwner) revert NotPendingOwner(msg.sender);
        address previous = owner;
        owner = msg.sender;
        pendingOwner = address(0);
        emit OwnershipTransferred(previous, msg.sender);
    }

    function addSigner(address signer) external onlyOwner {
        if (signer == address(0)) revert ZeroAddress();
        if (isSigner[signer]) revert AlreadySigner(signer);
        isSigner[signer] = true;
        signerCount += 1;
        emit SignerAdded(signer);
    }

    /// @notice Removing the last signer is allowed (it freezes releases until the owner adds one).
    function removeSigner(address signer) external onlyOwner {
        if (!isSigner[signer]) revert UnknownSigner(signer);
        isSigner[signer] = false;
        signerCount -= 1;
        emit SignerRemoved(signer);
    }

    /// @notice List (or unlist) a token whose `transfer`/`transferFrom` answer `false` on success. Balance checks
    ///         still apply to it.
    function setFalseReturnAccepted(address token, bool accepted) external onlyOwner {
        if (token == address(0)) revert ZeroAddress();
        falseReturnAccepted[token] = accepted;
        emit FalseReturnAcceptedSet(token, accepted);
    }

    // --- token calls -------------------------------------------------------------------------------------------

    /// @dev `token.transfer(to, amount)`; the escrow's balance must fall by exactly `amount`.
    function _pay(address token, address to, uint256 amount) private {
        uint256 before = _balanceOf(token);
        _callToken(token, abi.encodeCall(IERC20Like.transfer, (to, amount)));
        uint256 left = _balanceOf(token);
        left = before >= left ? before - left : 0;
        if (left != amount) revert BalanceMismatch(token, amount, left);
    }

    /// @dev A `transfer`/`transferFrom` call that accepts: no return data (the token has code: checked here), or a
    ///      first word of 1, or of 0 for a token listed in `falseReturnAccepted`. Reverts otherwise.
    function _callToken(address token, bytes memory data) private {
        if (token.code.length == 0) revert NotAContract(token);
        (bool ok, bytes memory ret) = token.call(data);
        if (!ok) revert TokenCallFailed(token);
        if (ret.length == 0) return;
        if (ret.length < 32) revert TokenCallFailed(token);
        uint256 word = abi.decode(ret, (uint256));
        if (word == 1 || (word == 0 && falseReturnAccepted[token])) return;
        revert TokenCallFailed(token);
    }

    function _balanceOf(address token) private view returns (uint256) {
        if (token.code.length == 0) revert NotAContract(token);
        (bool ok, bytes memory ret) = token.staticcall(abi.encodeCall(IERC20Like.balanceOf, (address(this))));
        if (!ok || ret.length < 32) revert TokenCallFailed(token);
        return abi.decode(ret, (uint256));
    }
}

/// @dev The ERC20/TRC20 functions the escrow calls, for `abi.encodeCall` (return values are read by hand).
interface IERC20Like {
    function transfer(address to, uint256 amount) external;
    function transferFrom(address from, address to, uint256 amount) external;
    function balanceOf(address owner) external view returns (uint256);
}
