#!/usr/bin/env node
// ee-enclave: parses flags and config, then composes the @enclave-extras packages.
// Each subcommand lives in src/commands/<name>.ts and exports register(program).
// Exit codes: 0 ok, 1 runtime failure, 2 usage or config error (run: the app's own status).
import { Command } from 'commander';
import { version } from '../package.json';
import { register as registerAttest } from './commands/attest.js';
import { register as registerKms } from './commands/kms.js';
import { register as registerNsm } from './commands/nsm.js';
import { register as registerRun } from './commands/run.js';

const program = new Command('ee-enclave')
  .description(
    'The enclave side of enclave-extras: entrypoint with TCP<->vsock routes and egress gateway, plus attest/kms/nsm tools.',
  )
  .version(version)
  .showHelpAfterError()
  .exitOverride((err) => {
    process.exit(err.exitCode === 0 ? 0 : 2);
  });

// Subcommands register here (one line each).
registerRun(program);
registerAttest(program);
registerKms(program);
registerNsm(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  const e = err as { code?: string; message?: string };
  process.stderr.write(`ee-enclave: ${e.code ? `${e.code}: ` : ''}${e.message ?? String(err)}\n`);
  process.exit(1);
});
