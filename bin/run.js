#!/usr/bin/env node
// The dstm CLI: oclif loads the compiled commands from dist/src/commands.
require('@oclif/core').execute({ dir: __dirname });
