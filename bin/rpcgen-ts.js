#!/usr/bin/env node
// rpcgen-ts FILE.x --out DIR: generate TypeScript codecs and RPC stubs from an XDR/RPC language file.
process.exitCode = require('../dist/src/rpcgen/cli.js').main(process.argv.slice(2));
