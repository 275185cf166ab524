#!/usr/bin/env node
// The `diff-sd` command. A committed file, so that npm links the bin when it installs the workspace, before the
// TypeScript is built; it runs the built CLI.
import '../dist/main.js';
