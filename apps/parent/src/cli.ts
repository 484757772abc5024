#!/usr/bin/env node
// ee-parent: parses flags and config, then composes the @enclave-extras packages.
// Each subcommand lives in src/commands/<name>.ts and exports register(program).
// Exit codes: 0 ok, 1 runtime failure, 2 usage or config error (run: the app's own status).
import { Command } from 'commander';
import { version } from '../package.json';
import { register as registerCredentials } from './commands/credentials.js';
import { register as registerEnclave } from './commands/enclave.js';
import { register as registerKmsLocal } from './commands/kms-local.js';
import { register as registerRun } from './commands/run.js';
import { register as registerVsockProxy } from './commands/vsock-proxy.js';

const program = new Command('ee-parent')
  .description(
    'The parent-instance side of enclave-extras: vsock proxies, routes, egress gateway, credentials relay and local attested KMS.',
  )
  .version(version)
  .showHelpAfterError()
  .exitOverride((err) => {
    process.exit(err.exitCode === 0 ? 0 : 2);
  });

// Subcommands register here (one line each).
registerVsockProxy(program);
registerRun(program);
registerKmsLocal(program);
registerCredentials(program);
registerEnclave(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  const e = err as { code?: string; message?: string };
  process.stderr.write(`ee-parent: ${e.code ? `${e.code}: ` : ''}${e.message ?? String(err)}\n`);
  process.exit(1);
});
