#!/usr/bin/env node
// Compiles every contracts/*.sol offline with solc-js (npm `solc`, pinned in package.json) and writes one artifact
// per deployable contract: contracts/artifacts/<Name>.json =
//   {"abi", "bytecode", "compiler", "contractName", "sourceSha256"}
//
// Usage (from the repository root):
//   node scripts/build-contracts.js            write the artifacts
//   node scripts/build-contracts.js --check    compile in memory, compare with the artifacts on disk, exit 1 and
//                                              list every mismatch (missing, stale, orphaned) without writing
//   --contracts-dir DIR  (default: contracts)    --artifacts-dir DIR  (default: <contracts-dir>/artifacts)
//
// Determinism: sources are keyed by file name only (not by absolute path), so the bytecode's metadata hash does not
// depend on where the tree lives; settings are pinned (optimizer on, 200 runs, evmVersion "paris": no PUSH0, runs on
// anvil and every EVM chain we follow); JSON is written with sorted keys, 2-space indent and a final newline.
// Rebuilding unchanged sources gives byte-identical files. A different solc version changes the bytecode: the
// artifact records the version, and --check reports it.
"use strict";

const crypto = require("crypto");
const fs = require("fs");
const path = require("path");
const solc = require("solc");

const EVM_VERSION = "paris";
const OPTIMIZER = { enabled: true, runs: 200 };

function parseArgs(argv) {
  const repoRoot = path.resolve(__dirname, "..");
  const opts = { check: false, contractsDir: path.join(repoRoot, "contracts"), artifactsDir: null };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--check") opts.check = true;
    else if (arg === "--contracts-dir") opts.contractsDir = path.resolve(argv[++i]);
    else if (arg === "--artifacts-dir") opts.artifactsDir = path.resolve(argv[++i]);
    else if (arg === "-h" || arg === "--help") {
      process.stdout.write("node scripts/build-contracts.js [--check] [--contracts-dir DIR] [--artifacts-dir DIR]\n");
      process.exit(0);
    } else {
      throw new Error(`unknown argument: ${arg}`);
    }
  }
  if (opts.artifactsDir === null) opts.artifactsDir = path.join(opts.contractsDir, "artifacts");
  return opts;
}

// JSON with keys sorted at every level; arrays keep their order (solc's ABI order is itself deterministic).
function canonical(value) {
  if (Array.isArray(value)) return value.map(canonical);
  if (value !== null && typeof value === "object") {
    const out = {};
    for (const key of Object.keys(value).sort()) out[key] = canonical(value[key]);
    return out;
  }
  return value;
}

function render(artifact) {
  return JSON.stringify(canonical(artifact), null, 2) + "\n";
}

function sha256(text) {
  return crypto.createHash("sha256").update(text, "utf8").digest("hex");
}

function compile(contractsDir) {
  const files = fs
    .readdirSync(contractsDir)
    .filter((f) => f.endsWith(".sol"))
    .sort();
  if (files.length === 0) throw new Error(`no .sol files in ${contractsDir}`);
  const sources = {};
  for (const f of files) sources[f] = { content: fs.readFileSync(path.join(contractsDir, f), "utf8") };

  const input = {
    language: "Solidity",
    sources,
    settings: {
      optimizer: OPTIMIZER,
      evmVersion: EVM_VERSION,
      outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
    },
  };
  const findImports = (importPath) => {
    const full = path.join(contractsDir, importPath);
    if (!fs.existsSync(full)) return { error: `import not found: ${importPath}` };
    return { contents: fs.readFileSync(full, "utf8") };
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
  const errors = (output.errors || []).filter((e) => e.severity === "error");
  for (const e of output.errors || []) process.stderr.write(e.formattedMessage || e.message);
  if (errors.length > 0) throw new Error(`solc: ${errors.length} error(s)`);

  const compiler = { evmVersion: EVM_VERSION, optimizer: OPTIMIZER, version: solc.version() };
  const artifacts = new Map();
  for (const file of Object.keys(output.contracts || {}).sort()) {
    for (const name of Object.keys(output.contracts[file]).sort()) {
      const c = output.contracts[file][name];
      const bytecode = c.evm.bytecode.object;
      if (!bytecode) continue; // interfaces and abstract contracts: nothing to deploy
      if (artifacts.has(name)) throw new Error(`contract name ${name} defined twice (${file})`);
      artifacts.set(name, {
        abi: c.abi,
        bytecode: "0x" + bytecode,
        compiler,
        contractName: name,
        sourceSha256: sha256(sources[file] ? sources[file].content : findImports(file).contents),
      });
    }
  }
  return artifacts;
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  const artifacts = compile(opts.contractsDir);
  const expected = new Map([...artifacts].map(([name, a]) => [`${name}.json`, render(a)]));

  if (!opts.check) {
    fs.mkdirSync(opts.artifactsDir, { recursive: true });
    for (const [file, text] of expected) {
      const target = path.join(opts.artifactsDir, file);
      const old = fs.existsSync(target) ? fs.readFileSync(target, "utf8") : null;
      if (old !== text) {
        fs.writeFileSync(target, text);
        process.stdout.write(`wrote ${path.relative(process.cwd(), target)}\n`);
      }
    }
    for (const file of fs.readdirSync(opts.artifactsDir).sort()) {
      if (file.endsWith(".json") && !expected.has(file)) {
        fs.unlinkSync(path.join(opts.artifactsDir, file));
        process.stdout.write(`removed orphaned ${file}\n`);
      }
    }
    return;
  }

  const problems = [];
  for (const [file, text] of expected) {
    const target = path.join(opts.artifactsDir, file);
    if (!fs.existsSync(target)) problems.push(`missing: ${file}`);
    else if (fs.readFileSync(target, "utf8") !== text) problems.push(`stale: ${file} differs from its source`);
  }
  const onDisk = fs.existsSync(opts.artifactsDir) ? fs.readdirSync(opts.artifactsDir) : [];
  for (const file of onDisk.sort()) {
    if (file.endsWith(".json") && !expected.has(file)) problems.push(`orphaned: ${file} has no source contract`);
  }
  if (problems.length > 0) {
    process.stderr.write(
      `contract artifacts out of date (run: node scripts/build-contracts.js):\n  ${problems.join("\n  ")}\n`,
    );
    process.exitCode = 1;
    return;
  }
  process.stdout.write(`${expected.size} artifact(s) up to date\n`);
}

try {
  main();
} catch (err) {
  process.stderr.write(`build-contracts: ${err.message}\n`);
  process.exitCode = 2;
}
